"""GAMIX-VAE networks: shapes at small resolutions, the author's Keras parameter counts, BN modes."""
import pytest
import torch

from mixvae.errors import UserError
from mixvae.nets.gamix import PatchGAN, ResNetV2Decoder, ResNetV2Encoder, keras_param_count

SMALL = dict(width=16, bottleneck=8)


@pytest.mark.parametrize("data_shape, grid, patches", [
    ((1, 28, 28), (7, 7), (4, 4)),       # 2 stages: 28 -> 14 -> 7
    ((3, 32, 32), (4, 4), (4, 4)),       # 3 stages
    ((3, 64, 64), (4, 4), (8, 8)),       # 4 stages
])
def test_shapes(data_shape, grid, patches):
    enc = ResNetV2Encoder(data_shape, latent_dim=6, **SMALL)
    mu, logvar = enc(torch.randn(2, *data_shape))
    assert mu.shape == logvar.shape == (2, 6)
    dec = ResNetV2Decoder(data_shape, latent_dim=6, params_per_pixel=2, **SMALL)
    assert dec.code_shape == (8, *grid)
    assert dec(torch.randn(2, 3, 6)).shape == (2, 3, 2, *data_shape)
    assert ResNetV2Decoder(data_shape, 6, **SMALL)(torch.randn(5, 6)).shape == (5, 1, *data_shape)
    assert PatchGAN(data_shape, width=8)(torch.randn(2, *data_shape)).shape == (2, 1, *patches)


def test_every_parameter_gets_a_gradient():
    enc = ResNetV2Encoder((1, 28, 28), 4, **SMALL)
    dec = ResNetV2Decoder((1, 28, 28), 4, **SMALL)
    mu, logvar = enc(torch.randn(3, 1, 28, 28))
    (dec(mu + logvar).square().mean()).backward()
    for name, p in [*enc.named_parameters(), *dec.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_logvar_is_bounded():
    enc = ResNetV2Encoder((1, 28, 28), 4, **SMALL)
    with torch.no_grad():
        enc.head.linear.bias.fill_(100.0)
        assert torch.all(enc(torch.randn(2, 1, 28, 28))[1] == 6.0)
        enc.head.linear.bias.fill_(-100.0)
        assert torch.all(enc(torch.randn(2, 1, 28, 28))[1] == -12.0)


def test_keras_parameter_counts_of_the_paper():
    """Keras summary: VAE 9,932,466 (encoder without its mu/logvar head + decoder), PatchGAN 412,101."""
    enc = ResNetV2Encoder((3, 256, 256), latent_dim=512)
    dec = ResNetV2Decoder((3, 256, 256), latent_dim=512)
    vae = keras_param_count(enc) - keras_param_count(enc.head) + keras_param_count(dec)
    assert vae == 9_932_466
    assert keras_param_count(PatchGAN((3, 256, 256))) == 412_101
    bn_stats = sum(b.numel() for n, b in [*enc.named_buffers(), *dec.named_buffers()] if "running" in n)
    assert bn_stats == 2 * (95 * 128 + 3)    # the summary's non-trainable VAE part


def _running_stats(module):
    return [b.clone() for n, b in module.named_buffers() if "running" in n]


def test_batch_mode_uses_batch_statistics_in_train_and_running_statistics_in_eval():
    enc = ResNetV2Encoder((1, 28, 28), 4, **SMALL)
    x = torch.randn(4, 1, 28, 28)
    before = _running_stats(enc)
    mu_batch = enc(x)[0]
    assert not torch.allclose(mu_batch[:1], enc(x[:1])[0])          # depends on the batch
    assert any(not torch.equal(a, b) for a, b in zip(before, _running_stats(enc)))
    enc.eval()
    after = _running_stats(enc)
    torch.testing.assert_close(enc(x)[0][:1], enc(x[:1])[0])       # per-sample in eval
    assert all(torch.equal(a, b) for a, b in zip(after, _running_stats(enc)))


def test_frozen_mode_is_the_same_affine_map_in_train_and_eval():
    x = torch.randn(4, 3, 32, 32)
    enc = ResNetV2Encoder((3, 32, 32), 4, bn_mode="frozen", **SMALL)
    disc = PatchGAN((3, 32, 32), width=8, dropout=0.0, bn_mode="frozen")
    for net, f in [(enc, lambda v: enc(v)[0]), (disc, disc)]:
        before = _running_stats(net)
        out = f(x)
        torch.testing.assert_close(f(x[:1]), out[:1])                # batch-independent
        net.eval()
        torch.testing.assert_close(f(x), out)
        assert all(torch.equal(a, b) for a, b in zip(before, _running_stats(net)))


def test_patchgan_dropout_only_in_train():
    d = PatchGAN((1, 28, 28), width=8, bn_mode="frozen")
    x = torch.randn(2, 1, 28, 28)
    assert not torch.equal(d(x), d(x))
    d.eval()
    assert torch.equal(d(x), d(x))


@pytest.mark.parametrize("kwargs", [dict(data_shape=(1, 7, 7)), dict(data_shape=(1, 28, 28), stages=3),
                                    dict(data_shape=(1, 28, 28), bn_mode="group")])
def test_bad_configurations_are_user_errors(kwargs):
    with pytest.raises(UserError):
        ResNetV2Encoder(latent_dim=2, **kwargs)
