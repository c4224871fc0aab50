package ai.npas;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.tensorflow.lite.Delegate;

/**
 * The npas sparse-kernel delegate for the TensorFlow Lite / LiteRT Java interpreter.
 *
 * <pre>{@code
 * try (NpasDelegate npas = new NpasDelegate(new NpasDelegate.Options().setNumThreads(4))) {
 *   Interpreter.Options options = new Interpreter.Options().addDelegate(npas);
 *   try (Interpreter interpreter = new Interpreter(modelBuffer, options)) {
 *     interpreter.run(input, output);
 *   }
 * }  // close the delegate only after every interpreter using it is closed
 * }</pre>
 *
 * <p>Needs libnpas_delegate.so and libnpas_jni.so for the device's ABI in the app's native
 * libraries (app/src/main/jniLibs/arm64-v8a/). The delegate claims the CONV_2D,
 * DEPTHWISE_CONV_2D and FULLY_CONNECTED nodes (and NPAS custom ops) whose structured sparsity pays
 * off and leaves everything else to the interpreter's own kernels.
 */
public final class NpasDelegate implements Delegate {
  static {
    // libnpas_jni.so needs libnpas_delegate.so; loading it first also works on old linkers.
    System.loadLibrary("npas_delegate");
    System.loadLibrary("npas_jni");
  }

  /** Delegate options; each maps to one key/value option of the native delegate. */
  public static final class Options {
    private final Map<String, String> values = new LinkedHashMap<>();

    /** Threads of the delegate's shared pool (>= 1; default 1). */
    public Options setNumThreads(int numThreads) {
      return set("num_threads", Integer.toString(numThreads));
    }

    /** Nodes whose weights have less sparsity than this (in [0, 1)) are left to the default kernels. */
    public Options setMinSparsity(double minSparsity) {
      return set("min_sparsity", Double.toString(minSparsity));
    }

    /** Claim a node only if the measured sparse kernel beats dense by this factor. */
    public Options setMinSpeedup(double minSpeedup) {
      return set("min_speedup", Double.toString(minSpeedup));
    }

    /** Comma-separated structures allowed: bcr, block_punched, pattern, n_m, unstructured, dense, all. */
    public Options setSchemes(String schemes) {
      return set("schemes", schemes);
    }

    /** Kernel choice: auto (measured, default), row_block, pixel_vector or dense. */
    public Options setKernel(String kernel) {
      return set("kernel", kernel);
    }

    /** 0 (quiet), 1 or 2: claim decisions logged to stderr. */
    public Options setVerbose(int verbose) {
      return set("verbose", Integer.toString(verbose));
    }

    /** File caching the kernel measurements between runs (e.g. under Context.getCacheDir()). */
    public Options setTuningCache(String path) {
      return set("tuning_cache", path);
    }

    /** Any native option by name (validated by the native library when the delegate is created). */
    public Options set(String key, String value) {
      if (key == null || value == null) {
        throw new NullPointerException("npas delegate: null option key or value");
      }
      values.put(key, value);
      return this;
    }
  }

  private long handle;

  /** A delegate with default options. */
  public NpasDelegate() {
    this(new Options());
  }

  /**
   * @throws IllegalArgumentException if the native library rejects an option (the message says
   *     which and why)
   */
  public NpasDelegate(Options options) {
    List<String> keys = new ArrayList<>();
    List<String> vals = new ArrayList<>();
    for (Map.Entry<String, String> e : options.values.entrySet()) {
      keys.add(e.getKey());
      vals.add(e.getValue());
    }
    handle = nativeCreate(keys.toArray(new String[0]), vals.toArray(new String[0]));
  }

  @Override
  public synchronized long getNativeHandle() {
    if (handle == 0) {
      throw new IllegalStateException("npas delegate: already closed");
    }
    return handle;
  }

  /** Destroys the native delegate. Call it after closing every Interpreter that uses it. */
  @Override
  public synchronized void close() {
    if (handle != 0) {
      nativeDestroy(handle);
      handle = 0;
    }
  }

  private static native long nativeCreate(String[] keys, String[] values);

  private static native void nativeDestroy(long handle);
}
