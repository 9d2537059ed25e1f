"""Writes a small hls4ml 1.3.0 project from a Keras model (Conv1D, ReLU, 1D max pool, batchnorm, tanh,
1D global average, Dense, softmax; Resource and Latency layers) for the estimator's tests:
``python -m tests.keras_project OUT_DIR``. Only ``write()``: no compile, no HLS tool."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(out: str) -> None:
    import hls4ml
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((64, 3))
    x = layers.Conv1D(8, 3, name="c1")(x)
    x = layers.Activation("relu", name="r1")(x)
    x = layers.MaxPooling1D(2, name="p1")(x)
    x = layers.Conv1D(8, 3, name="c2")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation("tanh", name="t1")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    x = layers.Dense(5, name="d1")(x)
    x = layers.Activation("softmax", name="sm")(x)
    model = keras.Model(inp, x)
    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis",
                                                  default_precision="fixed<16,6>")
    for name in ("c1", "c2"):
        config["LayerName"][name]["Strategy"] = "Resource"
        config["LayerName"][name]["ReuseFactor"] = 3
    config["LayerName"]["d1"]["Strategy"] = "Latency"
    model_hls = hls4ml.converters.convert_from_keras_model(model, hls_config=config, io_type="io_stream",
                                                           output_dir=out, part="xc7z020clg400-1", backend="Vitis")
    model_hls.write()


if __name__ == "__main__":
    main(sys.argv[1])
