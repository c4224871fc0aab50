"""The one place that decides which Keras npas-keras works with (tf_keras, the Keras 2 API).

tensorflow-model-optimization only works with tf_keras; under TF >= 2.16 `tf.keras` is Keras 3
unless TF_USE_LEGACY_KERAS=1. Models from Keras 3 get a clear error instead of odd failures.
"""
import tf_keras as keras

KERAS3_MESSAGE = (
    "npas-keras works with tf_keras (the Keras 2 API), but got a {kind} from Keras 3 "
    "(module {module!r}). Build the model with `import tf_keras as keras` (or set "
    "TF_USE_LEGACY_KERAS=1 before importing TensorFlow so that tf.keras is tf_keras)."
)


def is_keras3_object(obj) -> bool:
    module = type(obj).__module__ or ""
    return module == "keras" or module.startswith("keras.") or module.startswith("keras.src")


def check_model(model, what: str = "model"):
    """Raises TypeError unless `model` is a tf_keras Model (the only kind the toolkit supports)."""
    if is_keras3_object(model):
        raise TypeError(KERAS3_MESSAGE.format(kind=what, module=type(model).__module__))
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a tf_keras Model as {what}, got {type(model).__name__}")
    return model


def check_layer(layer):
    if is_keras3_object(layer):
        raise TypeError(KERAS3_MESSAGE.format(kind="layer", module=type(layer).__module__))
    return layer
