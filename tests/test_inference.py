"""The fast path: exact BatchNorm folding (bn0's trap, and its exact fold with a bias map), every backend
against eager float32 on preprocessed faces at an assert_close-level tolerance, the ONNX export, unavailable
backends, and fc5 compression. No timings: the benchmark measures speed."""
import copy
import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resnet_arcface
from conftest import randomize_
from resnet_arcface import IRBlock, resnet_arcface18, resnet_arcface_small
from resnet_arcface.deploy import folding, inference
from resnet_arcface.deploy.compress import checkpoint_bytes, compress_state_dict, decompress_state_dict, quantize_fc5_onnx
from resnet_arcface.deploy.folding import ConvBiasMap, fold_bn_conv
from resnet_arcface.deploy.inference import (TOLERANCE, BackendUnavailable, check_faces, export_for_onnx_runtime,
                                             export_onnx, fold_batchnorm, fold_conv_bn, for_onnx_runtime, max_error,
                                             onnx_session, optimize)

HAVE_ORT = all(importlib.util.find_spec(p) for p in ("onnx", "onnxruntime"))
EXACT_BACKENDS = ["eager", "channels_last", "fold", "fold_channels_last", "onnxruntime"]


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))  # the test machine is shared
    yield
    torch.set_num_threads(before)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float(), b.float(), dim=1).min().item()


@pytest.fixture(scope="module")
def random_model():
    """The small configuration with SE gates, every weight and BN statistic random (non-trivial BN)."""
    return randomize_(resnet_arcface_small(use_se=True), seed=1).eval()


@pytest.fixture(scope="module")
def trained_model():
    """The shipped trained weights when they exist; until then a randomised small model."""
    if hasattr(resnet_arcface, "pretrained"):
        try:
            return resnet_arcface.pretrained("synthetic").eval()
        except (FileNotFoundError, ValueError):  # weights not shipped yet
            pass
    return randomize_(resnet_arcface_small(), seed=2).eval()


@pytest.fixture(scope="module")
def faces(random_model):
    """Preprocessed faces (synthetic identities through the model's transform), not noise."""
    return check_faces(random_model, 5)


def exact(out: torch.Tensor, reference: torch.Tensor) -> None:
    """The package's exactness bar: assert_close with atol = TOLERANCE times the reference's largest value."""
    torch.testing.assert_close(out, reference, rtol=0, atol=TOLERANCE * reference.abs().max().item())


# --- BatchNorm folding ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, padding=1, bias=False), dict(kernel_size=1, stride=2),
                                    dict(kernel_size=3, stride=2, padding=1, groups=2, bias=True)])
def test_fold_conv_bn_equals_conv_then_bn(kwargs):
    conv = nn.Conv2d(4, 6, **kwargs)
    bn = randomize_(nn.BatchNorm2d(6)).eval()
    before = {k: v.clone() for k, v in {**conv.state_dict(), **bn.state_dict()}.items()}
    folded = fold_conv_bn(conv, bn)
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(conv(x)), rtol=1e-5, atol=1e-5)
    assert folded.bias is not None and folded.stride == conv.stride and folded.groups == conv.groups
    after = {**conv.state_dict(), **bn.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in before), "fold_conv_bn must not modify its arguments"


def test_fold_conv_bn_rejects_mismatched_pair():
    with pytest.raises(ValueError, match="channels"):
        fold_conv_bn(nn.Conv2d(4, 6, 3), nn.BatchNorm2d(4))


def test_fold_batchnorm_is_exact_on_gfpgan_and_leaves_bn0():
    model = randomize_(resnet_arcface18()).eval()
    folded = fold_batchnorm(model)
    x = check_faces(model, 2)
    with torch.no_grad():
        exact(folded(x), model(x))
    blocks = [m for m in folded.modules() if isinstance(m, IRBlock)]
    assert len(blocks) == 8 and all(isinstance(b.bn0, nn.BatchNorm2d) for b in blocks)
    left = [n for n, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert left == [f"layer{s}.{i}.bn0" for s in range(1, 5) for i in range(2)], left
    assert isinstance(model.layer1[0].bn1, nn.BatchNorm2d), "the original model must be untouched"


def test_fold_batchnorm_refuses_train_mode():
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(resnet_arcface_small())


def fold_bn_before_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """The tempting, WRONG fold of a BatchNorm that comes before a zero-padded convolution."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        wrong = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
        wrong.weight.copy_(conv.weight * scale.view(1, -1, 1, 1))  # scale each INPUT channel
        wrong.bias.copy_((conv.weight * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3)))  # as if padding held `shift`
    return wrong


def test_folding_bn0_would_break_exactness_at_the_border():
    """The trap: bn0 comes BEFORE conv1, which pads with zeros. Folded into conv1, its shift would
    reach the padded border too, where the real block sees zeros: the output changes there only."""
    block = randomize_(IRBlock(8, 8, use_se=False)).eval()
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        right, bad = block.conv1(block.bn0(x)), fold_bn_before_conv(block.bn0, block.conv1)(x)
    torch.testing.assert_close(bad[..., 1:-1, 1:-1], right[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)  # interior: same
    border = (bad - right).abs()
    assert border[..., 0, :].mean() > 1e-2 and border[..., :, -1].mean() > 1e-2  # border: different
    assert cosine(bad.flatten(1), right.flatten(1)) < 0.9999


def test_folding_every_bn0_breaks_the_trained_network(trained_model):
    """On trained weights (running means far from 0) the border error reaches the embeddings."""
    if not hasattr(resnet_arcface, "pretrained"):
        pytest.skip("no shipped weights yet")
    net = copy.deepcopy(trained_model)
    x = check_faces(trained_model)
    with torch.no_grad():
        for block in [m for m in net.modules() if isinstance(m, IRBlock)]:
            block.conv1, block.bn0 = fold_bn_before_conv(block.bn0, block.conv1), nn.Identity()
        assert cosine(net(x), trained_model(x)) < 0.999
        exact(fold_batchnorm(trained_model)(x), trained_model(x))


# --- bn0 folds exactly: scale into conv1's weights, shift as a constant bias map ----------------------

def test_fold_bn_conv_is_exact_at_the_border_too():
    """The fold the per-channel bias cannot do: exact everywhere, the one-pixel frame included."""
    block = randomize_(IRBlock(8, 8, use_se=False)).eval().double()
    x = torch.randn(2, 8, 12, 12, dtype=torch.float64)
    folded = fold_bn_conv(block.bn0, block.conv1, (12, 12))
    with torch.no_grad():
        right, got = block.conv1(block.bn0(x)), folded(x)
    torch.testing.assert_close(got, right, rtol=1e-12, atol=1e-12)  # float64: only rounding remains
    assert isinstance(folded, ConvBiasMap) and folded.bias_map.shape == (1, 8, 12, 12)
    corner, inside = folded.bias_map[0, :, 0, 0], folded.bias_map[0, :, 5, 5]
    assert not torch.allclose(corner, inside)  # the map differs where conv1 read padding: no per-channel bias
    torch.testing.assert_close(folded.bias_map[0, :, 3:9, 3:9], inside.view(-1, 1, 1).expand(8, 6, 6))
    with pytest.raises(ValueError, match="one input size"):
        folded(torch.randn(1, 8, 16, 16, dtype=torch.float64))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, stride=2, padding=1, bias=True),
                                    dict(kernel_size=1, stride=2), dict(kernel_size=5, padding=2, dilation=1)])
def test_fold_bn_conv_any_zero_padded_conv(kwargs):
    bn, conv = randomize_(nn.BatchNorm2d(4)).eval(), nn.Conv2d(4, 6, **kwargs)
    x = torch.randn(3, 4, 11, 11)
    with torch.no_grad():
        exact(fold_bn_conv(bn, conv, (11, 11))(x), conv(bn(x)))
    with pytest.raises(ValueError, match="groups"):
        fold_bn_conv(bn, nn.Conv2d(4, 6, 3, groups=2), (11, 11))


def test_fold_batchnorm_bn0_leaves_no_batchnorm_and_is_exact(trained_model):
    folded = fold_batchnorm(trained_model, bn0=True)
    assert not [n for n, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    x = check_faces(trained_model, 8)
    with torch.no_grad():
        reference = trained_model(x)
        exact(folded(x), reference)
        assert max_error(folded(x), reference) < 5e-6  # measured: 6e-7 here (float rounding); eps dropped: 9e-4


def test_fold_batchnorm_bn0_on_gfpgan_is_exact():
    model = randomize_(resnet_arcface18(), seed=4).eval()
    x = check_faces(model, 2)
    with torch.no_grad():
        exact(fold_batchnorm(model, bn0=True)(x), model(x))


def drop_eps(bn: nn.modules.batchnorm._BatchNorm):
    """The mutant: BatchNorm folded as if eps were 0 (gamma / sqrt(var) instead of gamma / sqrt(var + eps))."""
    scale = torch.rsqrt(bn.running_var.double()) * bn.weight.double()
    return scale, bn.bias.double() - bn.running_mean.double() * scale


def test_a_fold_that_drops_eps_fails_the_exactness_check(trained_model, monkeypatch):
    """A cosine bar of 0.99999 accepted this mutant; an assert_close-level bar on faces must not."""
    x = check_faces(trained_model)
    with torch.no_grad():
        reference = trained_model(x)
    monkeypatch.setattr(folding, "bn_scale_shift", drop_eps)
    with torch.no_grad():
        mutant = fold_batchnorm(trained_model, bn0=True)(x)
    assert cosine(mutant, reference) > 0.99999  # what the old check measured: it passed
    assert max_error(mutant, reference) > 10 * TOLERANCE
    with pytest.raises(AssertionError):
        exact(mutant, reference)
    with pytest.raises(RuntimeError, match="not exact"):
        optimize(trained_model, "fold")


# --- Every backend against eager float32 ----------------------------------------------------------

@pytest.mark.parametrize("weights", ["random", "trained"])
@pytest.mark.parametrize("backend", EXACT_BACKENDS)
def test_backend_matches_eager(backend, weights, random_model, trained_model):
    if backend == "onnxruntime" and not HAVE_ORT:
        pytest.skip("onnx/onnxruntime not installed")
    model = random_model if weights == "random" else trained_model
    embedder = optimize(model, backend)
    x = check_faces(model, 3)
    with torch.no_grad():
        expected = model(x)
    got = embedder(x)
    assert got.shape == expected.shape == (3, model.embedding_dim)
    exact(got, expected)
    assert embedder.max_error <= TOLERANCE and embedder.backend == backend


@pytest.mark.skipif(os.environ.get("RESNET_ARCFACE_TEST_COMPILE") != "1",
                    reason="Inductor's cold compile takes 30-150 s on a 2-core CPU; set RESNET_ARCFACE_TEST_COMPILE=1 "
                           "(python -m resnet_arcface.deploy.bench checks compile against eager on every run)")
def test_compile_matches_eager_on_a_tiny_model():
    # A tiny configuration keeps the compile short; the arithmetic is the same code path.
    model = randomize_(resnet_arcface_small(widths=(4, 8, 8, 8), input_size=16, embedding_dim=8), seed=3).eval()
    embedder = optimize(model, "compile", batch_size=2)
    x = check_faces(model, 3)
    with torch.no_grad():
        exact(embedder(x), model(x))


def test_bf16_is_measured_not_held_to_the_bar(random_model, faces):
    embedder = optimize(random_model, "bf16")
    assert not embedder.exact and 0.99 < embedder.min_cosine <= 1.0 and embedder.max_error > TOLERANCE
    assert embedder(faces).dtype == torch.float32


def test_embedder_returns_raw_embeddings_unless_asked_to_normalise(trained_model, faces):
    """The convention: network-input callables return what the network computes; normalize=True gives
    unit-norm rows, as resnet_arcface.embed (which takes images) does by default."""
    embedder = optimize(trained_model, "eager")
    x = check_faces(trained_model, 3)
    with torch.no_grad():
        raw = trained_model(x)
    torch.testing.assert_close(embedder(x), raw)
    torch.testing.assert_close(embedder(x, normalize=True), F.normalize(raw, dim=1))
    images, _ = resnet_arcface.synthetic_faces(3, 1, size=trained_model.input_size, seed=0)
    torch.testing.assert_close(resnet_arcface.embed(trained_model, images), embedder(x, normalize=True))
    torch.testing.assert_close(resnet_arcface.embed(trained_model, images, normalize=False), raw)


def test_auto_picks_onnxruntime_on_cpu_and_batch_size_chunks_and_pads(random_model):
    if not HAVE_ORT:
        pytest.skip("onnx/onnxruntime not installed")
    embedder = optimize(random_model, "auto", batch_size=4)  # ONNX Runtime, exported with a static batch of 4
    assert embedder.backend == "onnxruntime" and embedder.fallbacks == []
    for n in (1, 4, 6):  # padded, exact, chunked
        x = check_faces(random_model, n)
        with torch.no_grad():
            exact(embedder(x), random_model(x))


def test_optimize_refuses_train_mode_and_bad_arguments(random_model):
    with pytest.raises(ValueError, match="eval"):
        optimize(resnet_arcface_small(), "eager")
    with pytest.raises(ValueError, match="Unknown backend"):
        optimize(random_model, "tensorrt")
    with pytest.raises(ValueError, match="batch_size"):
        optimize(random_model, "eager", batch_size=0)


def test_embedder_validates_input(random_model):
    embedder = optimize(random_model, "fold", check=False)
    with pytest.raises(ValueError, match="channels"):
        embedder(torch.randn(2, 3, 32, 32))


# --- ONNX -------------------------------------------------------------------------------------------

def test_for_onnx_runtime_rewrites_exactly(random_model, faces):
    net = for_onnx_runtime(fold_batchnorm(random_model))
    kinds = {type(m) for m in net.modules()}
    assert nn.PReLU not in kinds and nn.BatchNorm2d not in kinds and nn.LeakyReLU in kinds
    with torch.no_grad():
        exact(net(faces), random_model(faces))


@pytest.fixture(scope="module")
def trained_proto(trained_model):
    if not HAVE_ORT:
        pytest.skip("onnx/onnxruntime not installed")
    return export_onnx(fold_batchnorm(trained_model, bn0=True))  # bn0's bias maps export as constants


def test_onnx_export_passes_the_checker_and_has_a_dynamic_batch(trained_proto, trained_model):
    import onnx

    proto = trained_proto
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["faces"] and [o.name for o in proto.graph.output] == ["embeddings"]
    session = onnx_session(proto, threads=1)
    for n in (1, 3):
        x = check_faces(trained_model, n)
        out = session.run(None, {"faces": x.numpy()})[0]
        with torch.no_grad():
            exact(torch.from_numpy(out), trained_model(x))


def test_the_backends_onnx_model_is_the_fully_folded_one(trained_model):
    if not HAVE_ORT:
        pytest.skip("onnx/onnxruntime not installed")
    ops = {n.op_type for n in export_for_onnx_runtime(trained_model).graph.node}
    assert "BatchNormalization" not in ops and "PRelu" not in ops and "LeakyRelu" in ops


def test_unavailable_backend_says_why_and_auto_falls_back(random_model, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(inference.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime"):
        optimize(random_model, "onnxruntime")
    embedder = optimize(random_model, "auto")
    assert embedder.backend == "fold_channels_last"
    assert embedder.fallbacks[0][0] == "onnxruntime" and "onnxruntime" in embedder.fallbacks[0][1]


# --- fc5 compression ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, max_rel", [("fp32", 0.0), ("fp16", 1e-3), ("int8", 1e-2)])
def test_fc5_compression_round_trip(fmt, max_rel, trained_model):
    state = trained_model.state_dict()
    packed = compress_state_dict(state, fc5=fmt)
    restored = decompress_state_dict(packed)
    assert set(restored) == set(state)
    model = copy.deepcopy(trained_model)
    model.load_state_dict(restored)  # strict: the keys and shapes of a normal checkpoint
    w, w0 = restored["fc5.weight"], state["fc5.weight"]
    assert w.dtype == torch.float32
    assert (w - w0).abs().max() <= max_rel * w0.abs().max() + 1e-12
    assert all(torch.equal(restored[k], state[k]) for k in state if k != "fc5.weight")


def test_fc5_compression_shrinks_gfpgans_checkpoint():
    state = resnet_arcface18().state_dict()
    sizes = {fmt: checkpoint_bytes(compress_state_dict(state, fc5=fmt)) for fmt in ("fp32", "fp16", "int8")}
    fc5 = state["fc5.weight"].numel()
    assert sizes["fp32"] - sizes["fp16"] == pytest.approx(2 * fc5, rel=0.01)
    assert sizes["fp32"] - sizes["int8"] == pytest.approx(3 * fc5, rel=0.01)


def test_fc5_dynamic_int8_runs_close_to_fp32(trained_proto, trained_model):
    session = onnx_session(quantize_fc5_onnx(trained_proto), threads=1)
    x = check_faces(trained_model)
    out = torch.from_numpy(session.run(None, {"faces": x.numpy()})[0])
    with torch.no_grad():
        assert cosine(out, trained_model(x)) > 0.99
