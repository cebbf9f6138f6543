// The reference article's Java leak as operators run it: a direct buffer allocated and kept by
// a method called 4 times a second, which the JIT never compiles (it stays interpreted). Run
// with the source launcher and no flags:
//   java LeakSlow.java SIZE COUNT
// Prints "pid N"; waits for the file named by FIXTURE_GO, if set; calls leakBuffer(SIZE) COUNT
// times, 250 ms apart; prints "leaked N".
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

public class LeakSlow {
    private static final List<ByteBuffer> leaked = new ArrayList<>();

    static void leakBuffer(int size) {
        leaked.add(ByteBuffer.allocateDirect(size));
    }

    public static void main(String[] args) throws Exception {
        int size = Integer.parseInt(args[0]);
        int count = Integer.parseInt(args[1]);
        System.out.println("pid " + ProcessHandle.current().pid());
        String go = System.getenv("FIXTURE_GO");
        if (go != null)
            while (!Files.exists(Path.of(go))) Thread.sleep(10);
        for (int i = 0; i < count; i++) {
            leakBuffer(size);
            Thread.sleep(250);
        }
        System.out.println("leaked " + (long) size * count);
        while (true) Thread.sleep(1000);
    }
}
