"""Rebuild the hls4ml project files of the hls4ml-tutorial part 6 CNNs (pruned_cnn, quantized_pruned_cnn).

The tutorial repository (fastmachinelearning/hls4ml-tutorial) publishes only the csynth and Vivado
reports of these two designs (Vivado HLS 2020.1, June 2021); this script regenerates the four project
files that describe them (hls4ml_config.yml, firmware/parameters.h, firmware/defines.h,
firmware/myproject.cpp) with hls4ml 1.3.0, so the calibration set can pair the reports with a
layer-by-layer description. It writes them only (hls_model.write(): no compile, no build).

The Keras models are built as part6_cnns.ipynb builds them (same layers, same names), with seeded
random weights (np.random.default_rng(0)) instead of trained ones. Pruning is emulated by zeroing the
50% smallest-magnitude kernel entries of every Conv2D and Dense layer except output_dense (tfmot's
final_sparsity=0.50); biases and BatchNormalization parameters are not pruned.

QKeras does not run under Keras 3, so the quantized model is emulated:
  - QConv2DBatchnorm(kernel/bias quantized_bits(6,0,alpha=1)) -> Conv2D with bias (BN folded in,
    no BatchNormalization after it), weight and bias precision fixed<6,1>;
  - QActivation('quantized_relu(6)') -> Activation('relu') with the result type hls4ml's QKeras
    config path gives for quantized_relu(6) (see the modes below);
  - QDense(kernel quantized_bits(6,0,alpha=1), no bias) -> Dense, weight precision fixed<6,1>,
    followed by the notebook's BatchNormalization;
  - the kernels and biases of those layers are put on the quantized_bits(6,0) grid, k/32 in
    [-1, 31/32], before conversion, so the zero counts hls4ml sees are right (a surviving weight
    that would round to 0 is set to +-1/32, so each pruned layer has exactly 50% zeros).
hls4ml does not fuse a BatchNormalization into a QDense (the QDense's weight quantizer blocks the
fusion), and the published report has the two normalize instances; a plain Dense has no quantizer,
so for the quantized model the fusion pass is told, for the duration of the conversion only, not to
fuse bn_dense_0/bn_dense_1 into dense_0/dense_1 (hls4ml 1.3.0's SkipOptimizers setting is not
applied by its flows, so this is done by wrapping FuseBatchNormalization.match).

Modes (--mode):
  published (default): the types and softmax of the hls4ml that made the published reports (master
    of mid-2021, between v0.5.0 and v0.6.0: QConv2DBatchnorm support is not in v0.5.0). That
    config_from_keras_model gave every weight/bias/result/accum the default precision
    ap_fixed<16,6> (1.3.0 gives 'auto' and infers e.g. ap_fixed<38,18> for conv_0's output), its
    QKeras path turned quantized_relu(6) into ap_fixed<6,1> (signed: the published instance names
    read relu_..._ap_fixed_..., not ap_ufixed), and its Softmax took the strategy as implementation
    ('latency'; 1.3.0 defaults to 'stable'). The Dense/Conv layers a BatchNormalization is fused
    into keep 'auto' until the conversion (1.3.0 fuses only into an 'auto' result) and get
    ap_fixed<16,6> after it.
  recipe: hls4ml 1.3.0's own defaults for everything the notebook does not set ('auto' types,
    'stable' softmax, quantized_relu(6) -> ufixed<6,0,RND_CONV,SAT>).
Both modes: Vivado backend, io_stream, part xcu250-figd2104-2L-e, 5 ns, Strategy Latency, RF 1,
output_dense result fixed<16,6,RND,SAT>, ConvImplementation LineBuffer (the default of both eras).

Usage (from the repository root):
    .venv/bin/python -m fpga.calibration.rebuild_tutorial --out fpga/calibration/designs
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

PART = 'xcu250-figd2104-2L-e'
CLOCK_PERIOD = 5
FILTERS_PER_CONV_LAYER = [16, 16, 24]
NEURONS_PER_DENSE_LAYER = [42, 64]
INPUT_SHAPE = (32, 32, 3)  # SVHN (svhn_cropped)
N_CLASSES = 10
SPARSITY = 0.5
Q_WEIGHT = 'fixed<6,1>'  # quantized_bits(6,0,alpha=1) through hls4ml's QKeras frontend
Q_RELU = 'ufixed<6,0,RND_CONV,SAT>'  # quantized_relu(6) through hls4ml 1.3.0's QKeras config path
Q_RELU_2021 = 'ap_fixed<6,1>'  # quantized_relu(6) through the mid-2021 one (signed, integer+1)
DEFAULT_2021 = 'ap_fixed<16,6>'  # mid-2021 config_from_keras_model: every type the default precision
MODES = ('published', 'recipe')
PROJECT_FILES = ('hls4ml_config.yml', 'firmware/parameters.h', 'firmware/defines.h', 'firmware/myproject.cpp')
DESIGNS = ('pruned_cnn', 'quantized_pruned_cnn')


def build_pruned_cnn():
    """part6_cnns.ipynb cell 9 (the baseline, later pruned and stripped)."""
    from keras.layers import Activation, BatchNormalization, Conv2D, Dense, Flatten, Input, MaxPooling2D
    from keras.models import Model
    from keras.regularizers import l1

    x = x_in = Input(INPUT_SHAPE)
    for i, f in enumerate(FILTERS_PER_CONV_LAYER):
        x = Conv2D(
            int(f),
            kernel_size=(3, 3),
            strides=(1, 1),
            kernel_initializer='lecun_uniform',
            kernel_regularizer=l1(0.0001),
            use_bias=False,
            name='conv_{}'.format(i),
        )(x)
        x = BatchNormalization(name='bn_conv_{}'.format(i))(x)
        x = Activation('relu', name='conv_act_%i' % i)(x)
        x = MaxPooling2D(pool_size=(2, 2), name='pool_{}'.format(i))(x)
    x = Flatten()(x)
    for i, n in enumerate(NEURONS_PER_DENSE_LAYER):
        x = Dense(
            n, kernel_initializer='lecun_uniform', kernel_regularizer=l1(0.0001), name='dense_%i' % i, use_bias=False
        )(x)
        x = BatchNormalization(name='bn_dense_{}'.format(i))(x)
        x = Activation('relu', name='dense_act_%i' % i)(x)
    x = Dense(int(N_CLASSES), name='output_dense')(x)
    x_out = Activation('softmax', name='output_softmax')(x)
    return Model(inputs=[x_in], outputs=[x_out], name='keras_baseline')


def build_quantized_pruned_cnn():
    """part6_cnns.ipynb cell 18 with the QKeras layers replaced by their plain-Keras equivalents."""
    from keras.layers import Activation, BatchNormalization, Conv2D, Dense, Flatten, Input, MaxPooling2D
    from keras.models import Model
    from keras.regularizers import l1

    x = x_in = Input(shape=INPUT_SHAPE)
    for i, f in enumerate(FILTERS_PER_CONV_LAYER):
        # QConv2DBatchnorm: the BN is folded into the conv's kernel and bias
        x = Conv2D(
            int(f),
            kernel_size=(3, 3),
            strides=(1, 1),
            kernel_initializer='lecun_uniform',
            kernel_regularizer=l1(0.0001),
            use_bias=True,
            name='fused_convbn_{}'.format(i),
        )(x)
        x = Activation('relu', name='conv_act_%i' % i)(x)  # QActivation('quantized_relu(6)')
        x = MaxPooling2D(pool_size=(2, 2), name='pool_{}'.format(i))(x)
    x = Flatten()(x)
    for i, n in enumerate(NEURONS_PER_DENSE_LAYER):
        x = Dense(  # QDense(kernel_quantizer="quantized_bits(6,0,alpha=1)")
            n, kernel_initializer='lecun_uniform', kernel_regularizer=l1(0.0001), name='dense_%i' % i, use_bias=False
        )(x)
        x = BatchNormalization(name='bn_dense_{}'.format(i))(x)
        x = Activation('relu', name='dense_act_%i' % i)(x)  # QActivation('quantized_relu(6)')
    x = Dense(int(N_CLASSES), name='output_dense')(x)
    x_out = Activation('softmax', name='output_softmax')(x)
    return Model(inputs=[x_in], outputs=[x_out], name='qkeras')


def quantize_bits6(w):
    """quantized_bits(6,0,alpha=1): k/32, k in [-32, 31]."""
    return np.clip(np.round(np.asarray(w, dtype=np.float64) * 32), -32, 31) / 32


def prune(kernel, sparsity=SPARSITY):
    """Zero the `sparsity` fraction of smallest-magnitude entries (per layer); returns (kernel, mask)."""
    flat = np.abs(kernel).ravel()
    k = int(round(sparsity * flat.size))
    order = np.argsort(flat, kind='stable')
    mask = np.ones(flat.size, dtype=bool)
    mask[order[:k]] = False
    mask = mask.reshape(kernel.shape)
    return np.where(mask, kernel, 0.0), mask


def set_weights(model, rng, quantized):
    """Seeded random weights; pruning and (for the quantized model) the 6-bit grid. Returns a summary."""
    summary = {}
    for layer in model.layers:
        cls = layer.__class__.__name__
        if cls in ('Conv2D', 'Dense'):
            kernel_shape = tuple(layer.kernel.shape)
            fan_in = int(np.prod(kernel_shape[:-1]))
            limit = np.sqrt(3.0 / fan_in)  # lecun_uniform
            kernel = rng.uniform(-limit, limit, size=kernel_shape)
            pruned = layer.name != 'output_dense'
            q = quantized and pruned  # output_dense stays a plain float Dense in the notebook
            weights = []
            if pruned:
                kernel, mask = prune(kernel)
            if q:
                qk = quantize_bits6(kernel)
                # a surviving (unpruned) weight that rounds to 0 would add a zero the pruning did not make
                qk = np.where(mask & (qk == 0), np.sign(kernel) / 32, qk)
                kernel = qk
            weights.append(kernel.astype(np.float32))
            if layer.use_bias:
                bias = rng.uniform(-0.25, 0.25, size=(kernel_shape[-1],))
                if q:
                    bias = quantize_bits6(bias)
                weights.append(bias.astype(np.float32))
            layer.set_weights(weights)
            summary[layer.name] = (int(kernel.size), int(np.sum(kernel == 0)))
        elif cls == 'BatchNormalization':
            n = int(layer.gamma.shape[0])
            gamma = rng.uniform(0.5, 1.5, n)
            beta = rng.uniform(-0.1, 0.1, n)
            mean = rng.uniform(-0.1, 0.1, n)
            var = rng.uniform(0.5, 1.5, n)
            layer.set_weights([w.astype(np.float32) for w in (gamma, beta, mean, var)])
    return summary


def hls_config_for(model, quantized, mode):
    """The notebook's config, plus the QKeras precisions and (mode 'published') the mid-2021 types."""
    import hls4ml

    hls_config = hls4ml.utils.config_from_keras_model(
        model, granularity='name', backend='Vivado', default_precision='ap_fixed<16,6>'
    )
    hls_config['LayerName']['output_dense']['Precision']['result'] = 'fixed<16,6,RND,SAT>'
    q_relu = Q_RELU
    if mode == 'published':
        hls_config['LayerName']['output_softmax']['Implementation'] = 'latency'
        q_relu = Q_RELU_2021
        for layer_name, layer_cfg in hls_config['LayerName'].items():
            precision = layer_cfg.get('Precision')
            if not isinstance(precision, dict):
                continue
            for key, value in precision.items():
                # a Dense/Conv result must stay 'auto' for hls4ml 1.3.0 to fuse a following BatchNormalization
                # into it; those are pinned after the conversion (pin_fused_results)
                if value == 'auto' and not (key == 'result' and layer_name in fused_into(model, quantized)):
                    precision[key] = DEFAULT_2021
    if quantized:
        for i in range(len(FILTERS_PER_CONV_LAYER)):
            prec = hls_config['LayerName']['fused_convbn_{}'.format(i)]['Precision']
            prec['weight'] = Q_WEIGHT
            prec['bias'] = Q_WEIGHT
            hls_config['LayerName']['conv_act_%i' % i]['Precision']['result'] = q_relu
        for i in range(len(NEURONS_PER_DENSE_LAYER)):
            hls_config['LayerName']['dense_%i' % i]['Precision']['weight'] = Q_WEIGHT
            hls_config['LayerName']['dense_act_%i' % i]['Precision']['result'] = q_relu
    return hls_config


def fused_into(model, quantized):
    """Names of the Dense/Conv layers hls4ml fuses a following BatchNormalization into."""
    if quantized:
        return []  # QConv2DBatchnorm has no BN after it; a QDense's quantizer blocks the fusion
    names = []
    layers = model.layers
    for prev, layer in zip(layers, layers[1:]):
        if layer.__class__.__name__ == 'BatchNormalization' and prev.__class__.__name__ in ('Conv2D', 'Dense'):
            names.append(prev.name)
    return names


def pin_fused_results(hls_model, names):
    """Give the fused layers the mid-2021 result type (hls4ml 1.3.0 infers a full-width one)."""
    from hls4ml.model.types import FixedPrecisionType

    for name in names:
        precision = hls_model.graph[name].get_output_variable().type.precision
        # the backend has already wrapped it (APFixedPrecisionDefinition): change it in place
        assert isinstance(precision, FixedPrecisionType), (name, precision)
        precision.width, precision.integer, precision.signed = 16, 6, True
        precision.rounding_mode = precision.saturation_mode = precision.saturation_bits = None  # TRN, WRAP


@contextlib.contextmanager
def no_bn_fusion_into(layer_names):
    """Keep hls4ml from fusing a BatchNormalization into the named Dense/Conv layers (QKeras-like)."""
    from hls4ml.model.optimizer.passes.bn_fuse import FuseBatchNormalization

    original = FuseBatchNormalization.match

    def match(self, node):
        return original(self, node) and node.get_input_node().name not in layer_names

    FuseBatchNormalization.match = match
    try:
        yield
    finally:
        FuseBatchNormalization.match = original


def rebuild(name, out_root, mode='published', seed=0):
    """Build, convert and write one design; copy its four project files to <out_root>/<name>/."""
    import hls4ml
    import keras

    quantized = name == 'quantized_pruned_cnn'
    keras.backend.clear_session()  # fresh auto-names (flatten, input_layer) for each model
    model = build_quantized_pruned_cnn() if quantized else build_pruned_cnn()
    summary = set_weights(model, np.random.default_rng(seed), quantized)
    hls_config = hls_config_for(model, quantized, mode)

    qdense = ['dense_%i' % i for i in range(len(NEURONS_PER_DENSE_LAYER))] if quantized else []
    with tempfile.TemporaryDirectory(prefix='hls4ml_{}_'.format(name)) as tmp:
        prj = Path(tmp) / 'hls4ml_prj'
        with no_bn_fusion_into(qdense):
            hls_model = hls4ml.converters.convert_from_keras_model(
                model,
                hls_config=hls_config,
                backend='Vivado',
                output_dir=str(prj),
                part=PART,
                clock_period=CLOCK_PERIOD,
                io_type='io_stream',
            )
            if mode == 'published':
                pin_fused_results(hls_model, fused_into(model, quantized))
            hls_model.write()
        dest = Path(out_root) / name
        for rel in PROJECT_FILES:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(prj / rel, dest / rel)
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', required=True, help='designs folder; writes <out>/<design>/<project files>')
    ap.add_argument('--design', choices=DESIGNS, action='append', help='only this design (repeatable)')
    ap.add_argument(
        '--mode',
        choices=MODES,
        default='published',
        help="'published' (default): the mid-2021 hls4ml types and softmax of the published reports; "
        "'recipe': hls4ml 1.3.0's own defaults ('auto' types, 'stable' softmax, ufixed quantized_relu)",
    )
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    for name in args.design or DESIGNS:
        summary = rebuild(name, args.out, args.mode, args.seed)
        print('{}: written to {} (mode {})'.format(name, Path(args.out) / name, args.mode))
        for layer, (size, zeros) in summary.items():
            print('  {:<16s} {:6d} weights, {:6d} zero'.format(layer, size, zeros))
    return 0


if __name__ == '__main__':
    sys.exit(main())
