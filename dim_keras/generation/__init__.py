"""Implicit generator trained by prior matching to two Gaussians (App. A.8-A.9) and its baselines (Table 11)."""

from dim_keras.generation.models import NSGANCP, WGANGP, ImplicitPriorGenerator, jsd_fgan_bound
from dim_keras.generation.networks import (
    ResidualBlock,
    build_dcgan_encoder,
    build_dcgan_generator,
    build_mlp_encoder,
    build_mlp_generator,
    build_networks,
    build_resnet_encoder,
    build_resnet_generator,
    build_scalar_discriminator,
)

__all__ = [
    "ImplicitPriorGenerator",
    "NSGANCP",
    "WGANGP",
    "jsd_fgan_bound",
    "ResidualBlock",
    "build_dcgan_encoder",
    "build_dcgan_generator",
    "build_mlp_encoder",
    "build_mlp_generator",
    "build_networks",
    "build_resnet_encoder",
    "build_resnet_generator",
    "build_scalar_discriminator",
]
