/*
 * Compile-time stand-in for LiteRT / TensorFlow Lite's org.tensorflow.lite.Delegate (same
 * signature as the real interface), used ONLY so that tests can javac NpasDelegate.java without
 * the tensorflow-lite AAR. An app compiles against the real interface from
 * com.google.ai.edge.litert:litert (or org.tensorflow:tensorflow-lite) and never ships this file.
 */
package org.tensorflow.lite;

import java.io.Closeable;

public interface Delegate extends Closeable {
  /** The native TfLiteDelegate* this object wraps, as a long. */
  long getNativeHandle();

  /** Releases the native delegate; by default does nothing. */
  @Override
  default void close() {}
}
