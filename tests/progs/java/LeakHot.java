// The hot variant of the reference article's Java leak: direct buffers kept in a list and never
// released, by a method whose loop the JIT compiles (no JVM flags needed: leakwatchd asks the JVM
// for its perf map itself). Run with the source launcher:
//   java LeakHot.java SIZE COUNT WARMUP
// Prints "pid N"; waits for the file named by FIXTURE_GO, if set; fills the cache with WARMUP
// one-byte buffers and 20 of SIZE bytes (so that fillCache is compiled, as a hot path of a
// running server is, for both sizes: JDK 11's C2 otherwise recompiles at the first large one),
// waits 2 s for the JIT to finish what it queued, prints "warm", waits for FIXTURE_GO + ".leak"; leaks COUNT buffers of SIZE bytes through the
// same method; prints "leaked N".
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

public class LeakHot {
    private static final List<ByteBuffer> cache = new ArrayList<>();

    static void fillCache(int size, int count) {
        for (int i = 0; i < count; i++) cache.add(ByteBuffer.allocateDirect(size));
    }

    static void waitFor(String file) throws InterruptedException {
        if (file == null) return;
        while (!Files.exists(Path.of(file))) Thread.sleep(10);
    }

    public static void main(String[] args) throws Exception {
        int size = Integer.parseInt(args[0]);
        int count = Integer.parseInt(args[1]);
        int warmup = Integer.parseInt(args[2]);
        System.out.println("pid " + ProcessHandle.current().pid());
        String go = System.getenv("FIXTURE_GO");
        waitFor(go);
        // in rounds, so that fillCache is compiled whole (not only its loop, on stack)
        for (int i = 0; i < 1000; i++) {
            fillCache(1, warmup / 1000);
            // now and then a buffer of the leak's size: the compiled code has seen both (a JIT
            // that saw only small ones may compile the large one's path as a trap and recompile)
            if (i % 50 == 0) fillCache(size, 1);
        }
        Thread.sleep(2000);  // the compilations queued meanwhile are done
        System.out.println("warm " + warmup);
        waitFor(go == null ? null : go + ".leak");
        fillCache(size, count);
        System.out.println("leaked " + (long) size * count);
        while (true) Thread.sleep(1000);
    }
}
