"""The papers' architectures, registered by name (``model.arch``).

Each builder takes the config's ``model`` section, the data it is built for (``shape``), the prior
and the likelihood head, and returns a :class:`LatentVariableModel`. ``info``: ``data`` is the data
an architecture needs ('image' (C, H, W), 'vector' (D,) or 'any'), ``levels`` its latent levels,
``likelihoods`` (where given) the only likelihoods its decoder can parameterise (the first is
what 'auto' picks).
"""
from __future__ import annotations

from ..errors import UserError
from ..nets import gamix, pixelcnn, sintro, vamp
from ..registry import ARCHITECTURES
from .hvae import HVAE
from .pixel_hvae import PixelHVAE
from .vae import VAE


@ARCHITECTURES.register("vae", data="any", levels=1)
def gated_vae(m, data, prior, head) -> VAE:
    """The VampPrior paper's gated MLP VAE."""
    return VAE(vamp.Encoder(data.shape, m.latent_dim, m.hidden),
               vamp.Decoder(data.shape, m.latent_dim, m.hidden, head.params_per_pixel), prior, head, data.shape)


def _hvae(m, data, prior, head, conv: bool) -> HVAE:
    h = m.hidden[-1]
    return HVAE(vamp.Encoder(data.shape, m.latent_dim, m.hidden, conv=conv),
                vamp.ConditionalEncoder(data.shape, m.lower_latent_dim, m.latent_dim, h, conv=conv),
                vamp.ConditionalPrior(m.lower_latent_dim, m.latent_dim, h),
                vamp.HierarchicalDecoder(data.shape, m.lower_latent_dim, m.latent_dim, h, head.params_per_pixel,
                                         conv=conv),
                prior, head, data.shape)


@ARCHITECTURES.register("hvae", data="any", levels=2)
def gated_hvae(m, data, prior, head) -> HVAE:
    """The two-level gated MLP HVAE (the prior on z2)."""
    return _hvae(m, data, prior, head, conv=False)


@ARCHITECTURES.register("convhvae", data="image", levels=2)
def gated_conv_hvae(m, data, prior, head) -> HVAE:
    """The two-level HVAE with gated convolutions."""
    return _hvae(m, data, prior, head, conv=True)


@ARCHITECTURES.register("pixelhvae", data="image", levels=2)
def pixel_hvae(m, data, prior, head) -> PixelHVAE:
    """The convHVAE's encoders and p(z1|z2) with an autoregressive PixelCNN decoder (one type-A and
    seven type-B masked 3x3 convolutions, 64 channels)."""
    h = m.hidden[-1]
    return PixelHVAE(vamp.Encoder(data.shape, m.latent_dim, m.hidden, conv=True),
                     vamp.ConditionalEncoder(data.shape, m.lower_latent_dim, m.latent_dim, h, conv=True),
                     vamp.ConditionalPrior(m.lower_latent_dim, m.latent_dim, h),
                     pixelcnn.PixelCNNDecoder(data.shape, m.lower_latent_dim, m.latent_dim, head.params_per_pixel),
                     prior, head, data.shape)


@ARCHITECTURES.register("mlp2d", data="vector", levels=1, likelihoods=("gaussian",))
def mlp_2d(m, data, prior, head) -> VAE:
    """Soft-IntroVAE's ReLU MLP for the 2D benchmark (its decoder gives a Gaussian mean)."""
    return VAE(sintro.MLPEncoder(data.shape[0], m.latent_dim, m.hidden),
               sintro.MLPDecoder(data.shape[0], m.latent_dim, m.hidden), prior, head, data.shape)


@ARCHITECTURES.register("resnet", data="image", levels=1, likelihoods=("gaussian",))
def soft_intro_resnet(m, data, prior, head) -> VAE:
    """Soft-IntroVAE's residual image networks (no output squashing; the decoder gives a Gaussian mean)."""
    down = 2 ** len(m.channels)
    if data.shape[1] % down or data.shape[2] % down:
        raise UserError(f"model.channels = {m.channels} halves the image {len(m.channels)} times, but "
                        f"{data.shape[1]}x{data.shape[2]} is not divisible by {down}")
    return VAE(sintro.ResNetEncoder(data.shape, m.latent_dim, m.channels),
               sintro.ResNetDecoder(data.shape, m.latent_dim, m.channels), prior, head, data.shape)


def _check_resnetv2(m, where: str) -> None:
    if len(m.channels) != 2:
        raise UserError(f"{where}: model.channels = {m.channels} is not valid for model.arch = 'resnetv2'; "
                        "expected [width, bottleneck]")


@ARCHITECTURES.register("resnetv2", data="image", levels=1, check=_check_resnetv2)
def gamix_resnetv2(m, data, prior, head) -> VAE:
    """GAMIX-VAE's pre-activation ResNetV2 encoder and decoder."""
    width, bottleneck = m.channels
    net = dict(width=width, bottleneck=bottleneck, stages=m.stages, bn_mode=m.bn_mode)
    return VAE(gamix.ResNetV2Encoder(data.shape, m.latent_dim, **net),
               gamix.ResNetV2Decoder(data.shape, m.latent_dim, head.params_per_pixel, **net), prior, head, data.shape)


@ARCHITECTURES.register("custom", data="any", levels=1)
def custom(m, data, prior, head):
    """The architecture of a model trained from Python with your own networks: it cannot be rebuilt
    from a config, so building it raises a UserError that says so."""
    raise UserError("model.arch = 'custom': this run was trained from Python with your own networks; build "
                    "the model again and load its weights with mixvae.load_weights(model, RUN)")
