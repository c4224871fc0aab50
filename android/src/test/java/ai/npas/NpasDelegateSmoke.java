package ai.npas;

/**
 * Host-JVM smoke test of the JNI glue (no Android, no interpreter): creates and destroys native
 * delegates through NpasDelegate, with good and bad options. Run by delegate/tests/run_aarch64.sh:
 *   java -Xcheck:jni -Djava.library.path=build/jni-host -cp CLASSES ai.npas.NpasDelegateSmoke
 * Exit status 0 iff every check passed.
 */
public final class NpasDelegateSmoke {
  private static int passed = 0;
  private static int failed = 0;

  private static void check(boolean ok, String what) {
    if (ok) {
      passed++;
    } else {
      failed++;
      System.out.println("FAIL " + what);
    }
  }

  private static String rejects(NpasDelegate.Options options) {
    try (NpasDelegate d = new NpasDelegate(options)) {
      return d.getNativeHandle() == 0 ? "zero handle" : null;
    } catch (IllegalArgumentException e) {
      return e.getMessage();
    }
  }

  public static void main(String[] args) {
    NpasDelegate d = new NpasDelegate();
    long h = d.getNativeHandle();
    check(h != 0, "default delegate has a native handle");
    d.close();
    boolean threw = false;
    try {
      d.getNativeHandle();
    } catch (IllegalStateException e) {
      threw = true;
    }
    check(threw, "getNativeHandle after close throws IllegalStateException");
    d.close();  // idempotent
    check(true, "close twice");

    try (NpasDelegate d2 = new NpasDelegate(new NpasDelegate.Options()
             .setNumThreads(2).setKernel("auto").setSchemes("bcr, pattern").setMinSparsity(0.3)
             .setMinSpeedup(1.1).setVerbose(0))) {
      check(d2.getNativeHandle() != 0, "delegate with every typed option");
    }

    String msg = rejects(new NpasDelegate.Options().set("no_such_option", "1"));
    check(msg != null && msg.contains("unknown option"), "unknown option rejected: " + msg);
    msg = rejects(new NpasDelegate.Options().setNumThreads(0));
    check(msg != null && msg.contains("num_threads"), "num_threads=0 rejected: " + msg);
    msg = rejects(new NpasDelegate.Options().setKernel("fastest"));
    check(msg != null && msg.contains("kernel"), "bad kernel rejected: " + msg);

    // Many create/destroy cycles: no crash, distinct live handles.
    NpasDelegate a = new NpasDelegate();
    NpasDelegate b = new NpasDelegate();
    check(a.getNativeHandle() != b.getNativeHandle(), "two live delegates have distinct handles");
    a.close();
    b.close();
    for (int i = 0; i < 100; ++i) new NpasDelegate().close();
    check(true, "100 create/close cycles");

    System.out.println("NpasDelegate JNI smoke: " + passed + " passed, " + failed + " failed");
    System.exit(failed == 0 ? 0 : 1);
  }
}
