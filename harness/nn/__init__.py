"""Layers, models and training in numpy + numba, and the model subject techniques consume.

What is here
------------
* :mod:`~harness.nn.layers`: Dense, Conv2d (im2col + GEMM), MaxPool2d, AvgPool2d,
  ReLU, GELU, LayerNorm, BatchNorm, MultiHeadSelfAttention, Flatten; each with
  ``forward``/``backward``. :mod:`~harness.nn.kernels` holds the numba loops, each
  next to a numpy reference.
* :mod:`~harness.nn.models`: :class:`Sequential`, :class:`VisionTransformer`, the
  architectures (:func:`mlp`, :func:`lenet5`, :func:`tiny_vit`),
  :func:`recalibrate_batchnorm` and :func:`compact_channels`.
* :mod:`~harness.nn.losses` (softmax cross-entropy, MSE), :mod:`~harness.nn.optim`
  (SGD with momentum and weight decay, Adam/AdamW), :mod:`~harness.nn.train`
  (:func:`fit`, per-epoch ``train/loss``, ``train/accuracy``, ``train/val_accuracy``).
* :mod:`~harness.nn.runtime`: how a forward pass runs. Evaluation sends every GEMM
  (weights *and* attention's ``Q K^T``, ``A V``) through a matmul backend, by
  default :data:`~harness.numerics.backend.EXACT`; with ``quant_bits=b`` the
  backend receives signed integer codes (int32 holding b-bit values: activations
  per-tensor, weights per output channel, symmetric) and the result is rescaled.
  Training is exact float32 unless a technique gives a training GEMM
  (:mod:`~harness.nn.train_gemm`).
* :mod:`~harness.nn.cache`: train-once caching of base models (file lock + atomic
  rename).

The model subject (for technique authors)
-----------------------------------------
The model workloads (``digits_mlp``, ``mnist_lenet5``, ``mnist_mlp``, ``mnist_vit``) build a
:class:`ModelSubject`. A technique checks ``isinstance(subject, ModelSubject)``
(raise :class:`harness.api.IncompatibleError` otherwise) and uses:

``subject.weights() -> {name: W}``
    The prunable GEMM weights, by name (``"conv1.W"``, ``"fc1.W"``,
    ``"blocks.0.attn.qkv.W"``, ...). These are the live arrays: assigning
    ``W[...] = ...`` changes the model. Dense ``W`` is ``(in, out)``; Conv2d ``W`` is
    HWIO ``(kh, kw, C_in, C_out)``, so the last axis is always the output channel
    (a filter is ``W[..., c]``).
``subject.masks()``, ``subject.set_mask(name, mask)``
    Elementwise 0/1 masks, W-shaped. Masks never overwrite weights: the forward
    pass uses ``W * mask``, gradients are masked, so pruned weights stay pruned
    during training and a mask can be taken back. ``subject.density()`` gives the
    non-zero fraction per weight after all masks.
``subject.train(epochs, ctx=None, grad_hook=None, prefix="train/", gemm=None, **overrides)``
    Continue training, in exact float32 BLAS unless ``gemm`` is given: an object
    with ``matmul(a, b, call)`` that computes every training GEMM. ``call.op`` is
    the layer (``"fc1"``, ``"conv1"`` as its im2col GEMM; attention's
    ``"<attn>.qk"``/``".av"``, one call per sample and head) and ``call.role`` is
    ``forward`` (``X (M,K) @ W (K,N)``), ``grad_input`` (``dY (M,N) @ W.T``) or
    ``grad_weight`` (``X.T (K,M) @ dY``). It returns the full float32 result but
    may compute only part of it, zeros elsewhere (approximate dropout: kept rows
    ``R`` in forward, then rows ``R`` of ``dY @ W.T`` and ``X.T[:, R] @ dY[R]``
    keep the gradients exact for what was computed), or quantize its operands
    (dynasty). ``call.seed`` is shared by an op's three roles in one step, so a
    pattern drawn in forward can be drawn again for its gradients. Check one with
    :func:`harness.testing.check_training_gemm`.
    ``grad_hook(name, W) -> extra_grad | None`` is called for every prunable
    weight at every step and its result is added to
    the gradient before masks apply (ADMM: ``lambda n, W: rho * (W - Z[n] + U[n])``).
    ``overrides`` replace :class:`TrainConfig` fields (``lr=0.01``,
    ``optimizer="adam"``, ``schedule="constant"``). With ``ctx`` it logs per-epoch
    series under ``prefix`` (use e.g. ``prefix="technique/"`` to keep them apart
    from the base training), steps continuing from ``subject.epochs_trained``.
``subject.evaluate(backend=EXACT, split="test", quant_bits=None) -> accuracy``
    Accuracy in [0, 1] on ``"train"``, ``"val"`` or ``"test"``; search on ``"val"``,
    report on ``"test"`` (which is what the workload's ``evaluate`` does).
    ``subject.quant_bits`` is the default precision and a technique may change it.
    ``subject.logits(x, backend, quant_bits)`` gives raw outputs.
``subject.set_precision(layer, weight_bits=None, act_bits=None, weight_granularity="channel")``
    Per-layer bit widths (``subject.precision``): evaluation runs the layer at them
    (integer codes when both operands have bits) and the op trace reports them, so
    a cost model charges for the precision the technique chose. None keeps the
    workload's ``quant_bits``; 1-bit weights are ``alpha * sign(W)``. A technique that
    put the weights on its own grid ``alpha * Q`` passes ``weight_scale=alpha``.
``subject.channel_groups() -> {layer: channels}``, ``subject.set_channel_mask(layer, mask)``
    Output-channel masks (conv filters, hidden units; for the ViT the MLP hidden
    units ``blocks.i.fc1``). A masked channel is zero downstream (BatchNorm after it
    is masked too). ``subject.compact()`` returns a copy with the masked channels
    physically removed (sequential models), computing the same function.
``subject.recalibrate_batchnorm(samples=None)``
    Re-estimate BatchNorm running statistics over training data (MetaPruning does
    this before scoring a structure; ``mnist_lenet5`` has BatchNorm with
    ``batchnorm=True``, ``digits_mlp`` likewise).
ViT only (``subject.model`` is a :class:`VisionTransformer`)
    ``subject.set_head_mask(block, mask)`` prunes heads; ``model.attention_maps(x)``
    returns per-block ``(B, H, T, T)`` maps; ``model.token_policy =
    f(block_index, attention, keep) -> keep`` drops tokens during evaluation
    (cascade: a dropped token stays dropped, CLS is token 0 and always kept), and
    ``model.last_token_keep`` reports the kept fraction per block.
``subject.op_trace()``
    The :class:`~harness.optrace.OpTrace` of one sample, from an instrumented
    forward pass: convolutions as their im2col GEMMs, attention ``qk``/``av`` ops
    with ``has_weights=False`` and ``count`` = live heads, weight densities from
    masks, input densities measured (ReLU zeros, dropped tokens), bit widths as
    run, and each weight layer's effective weights (``trace.weight_values(op)``).
``subject.copy()``
    An independent model (masks, statistics, history) sharing the read-only data.

A technique that changes the architecture can also work on ``subject.model``
directly (:class:`Sequential` ``.stack`` of layers, ``layer.params``), and should
return the subject so the workload's ``evaluate`` and ``op_trace`` still work.

Subjects of other families
--------------------------
Workloads that are not classifiers build other subjects: GEMM operands
(``subject:gemms``), pixel-to-pixel models such as super-resolution (PSNR,
per-pixel feature maps, ``subject:pixel``), AxBench-style approximation kernels
with an error bound (``subject:kernel``), LLM decode serving batches
(``subject:serving``) and point clouds (``subject:points``). What a technique may
rely on for each is the protocol of that family in :mod:`harness.subjects` (same
weight and mask conventions as above, where there are weights); small working
instances are in :mod:`harness.testing.toy_workloads`.
"""

from harness.nn.layers import (
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dense,
    Flatten,
    GELU,
    Layer,
    LayerNorm,
    MaxPool2d,
    MultiHeadSelfAttention,
    ReLU,
)
from harness.nn.losses import mse, softmax_cross_entropy
from harness.nn.models import (
    Model,
    Sequential,
    VisionTransformer,
    compact_channels,
    lenet5,
    mlp,
    recalibrate_batchnorm,
    tiny_vit,
)
from harness.nn.optim import SGD, Adam
from harness.nn.runtime import OpRecorder, Precision, Runtime
from harness.nn.subject import ModelSubject, ModelWorkload
from harness.nn.train import GradHook, TrainConfig, accuracy, fit, predict

__all__ = [
    "Adam",
    "AvgPool2d",
    "BatchNorm",
    "Conv2d",
    "Dense",
    "Flatten",
    "GELU",
    "GradHook",
    "Layer",
    "LayerNorm",
    "MaxPool2d",
    "Model",
    "ModelSubject",
    "ModelWorkload",
    "MultiHeadSelfAttention",
    "OpRecorder",
    "Precision",
    "ReLU",
    "Runtime",
    "SGD",
    "Sequential",
    "TrainConfig",
    "VisionTransformer",
    "accuracy",
    "compact_channels",
    "fit",
    "lenet5",
    "mlp",
    "mse",
    "predict",
    "recalibrate_batchnorm",
    "softmax_cross_entropy",
    "tiny_vit",
]
