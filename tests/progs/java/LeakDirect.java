// The reference article's Java leak: direct buffers (native memory, malloc'ed by the JVM)
// kept in a list and never released. Run with the source launcher:
//   java -XX:+PreserveFramePointer LeakDirect.java SIZE COUNT WARMUP
// Prints "pid N"; waits for the file named by FIXTURE_GO, if set; calls leakBuffer(1) WARMUP
// times (so that the JIT compiles it, as a hot path of a running server is), prints "warm",
// waits for FIXTURE_GO + ".leak"; leaks COUNT buffers of SIZE bytes; prints "leaked N".
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

public class LeakDirect {
    private static final List<ByteBuffer> leaked = new ArrayList<>();

    static void leakBuffer(int size) {
        leaked.add(ByteBuffer.allocateDirect(size));
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
        for (int i = 0; i < warmup; i++) leakBuffer(1);
        System.out.println("warm " + warmup);
        waitFor(go == null ? null : go + ".leak");
        for (int i = 0; i < count; i++) leakBuffer(size);
        System.out.println("leaked " + (long) size * count);
        while (true) Thread.sleep(1000);
    }
}
