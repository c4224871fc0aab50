// JNI glue for ai.npas.NpasDelegate: creates and destroys the npas TFLite delegate through the
// library's C entry points (the same ones Python's load_delegate() uses), so the Java side hands
// the TfLiteDelegate* to org.tensorflow.lite.Interpreter.Options.addDelegate() as a long.
#include <jni.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" {
struct TfLiteDelegate;  // opaque here: only its address crosses into Java
TfLiteDelegate* tflite_plugin_create_delegate(const char* const* options_keys,
                                              const char* const* options_values, size_t num_options,
                                              void (*report_error)(const char*));
void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate);
}

namespace {

thread_local std::string t_error;  // message reported by the last failed create on this thread
void ReportError(const char* msg) { t_error = msg ? msg : ""; }

void Throw(JNIEnv* env, const char* cls, const std::string& msg) {
  jclass c = env->FindClass(cls);
  if (c != nullptr) env->ThrowNew(c, msg.c_str());
}

// Copies a Java String[] into UTF-8 std::strings; false (with a pending exception) on failure.
bool ToStrings(JNIEnv* env, jobjectArray arr, std::vector<std::string>* out) {
  const jsize n = arr ? env->GetArrayLength(arr) : 0;
  out->clear();
  out->reserve(n);
  for (jsize i = 0; i < n; ++i) {
    jstring s = static_cast<jstring>(env->GetObjectArrayElement(arr, i));
    if (s == nullptr) {
      Throw(env, "java/lang/NullPointerException", "npas delegate: null option key or value");
      return false;
    }
    const char* chars = env->GetStringUTFChars(s, nullptr);
    if (chars == nullptr) return false;  // OutOfMemoryError pending
    out->emplace_back(chars);
    env->ReleaseStringUTFChars(s, chars);
    env->DeleteLocalRef(s);
  }
  return true;
}

}  // namespace

extern "C" {

JNIEXPORT jlong JNICALL Java_ai_npas_NpasDelegate_nativeCreate(JNIEnv* env, jclass, jobjectArray keys,
                                                               jobjectArray values) {
  std::vector<std::string> k, v;
  if (!ToStrings(env, keys, &k) || !ToStrings(env, values, &v)) return 0;
  if (k.size() != v.size()) {
    Throw(env, "java/lang/IllegalArgumentException", "npas delegate: option keys and values differ in length");
    return 0;
  }
  std::vector<const char*> kp, vp;
  for (size_t i = 0; i < k.size(); ++i) {
    kp.push_back(k[i].c_str());
    vp.push_back(v[i].c_str());
  }
  t_error.clear();
  TfLiteDelegate* d = tflite_plugin_create_delegate(kp.data(), vp.data(), k.size(), ReportError);
  if (d == nullptr) {
    Throw(env, "java/lang/IllegalArgumentException",
          t_error.empty() ? std::string("npas delegate: creation failed") : t_error);
    return 0;
  }
  return static_cast<jlong>(reinterpret_cast<intptr_t>(d));
}

JNIEXPORT void JNICALL Java_ai_npas_NpasDelegate_nativeDestroy(JNIEnv*, jclass, jlong handle) {
  if (handle != 0) tflite_plugin_destroy_delegate(reinterpret_cast<TfLiteDelegate*>(static_cast<intptr_t>(handle)));
}

}  // extern "C"
