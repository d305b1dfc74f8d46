"""HPA's segmentation network, written natively: a U-Net on a DPN-92 (Dual Path Network) encoder.

It computes what ``pytorch_zoo.unet.DPNUnet(target_channel_num=3, input_channel_num=3,
encoder_name='dpn92')`` computes (the model behind HPA's ``hpacellseg``), and its ``state_dict`` has
the same keys and shapes, so the official nuclei and cell weights load into it unchanged. That is
why some attribute names below are pytorch_zoo's (``c1x1_a``, ``bottlenecks``, ``layer``, ``seq``...)
and why some Sequentials exist only to number their children like the original.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# DPN's two paths between blocks: the residual path and the densely growing path.
Paths = tuple[Tensor, Tensor]

# The DPN BatchNorms use eps=1e-3 (the weights descend from MXNet); a different eps changes outputs.
DPN_BN_EPS = 1e-3
STEM_CHANNELS = 64
GROUPS = 32  # cardinality of the grouped 3x3 convs
# DPN-92's four dual-path stages: (bottleneck width, residual channels, dense increment, blocks).
DPN92_STAGES = ((96, 256, 16, 3), (192, 512, 32, 4), (384, 1024, 24, 20), (768, 2048, 128, 3))


def _cat(x: Tensor | Paths) -> Tensor:
    return torch.cat(x, dim=1) if isinstance(x, tuple) else x


class BnReluConv(nn.Module):
    """Pre-activation conv (BN → ReLU → conv, no bias): pytorch_zoo's ``BnActConv2d``."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs, eps=DPN_BN_EPS)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding=kernel // 2, groups=groups,
                              bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.relu(self.bn(x)))


class BnRelu(nn.Module):
    """Concatenate both paths, BN, ReLU: pytorch_zoo's ``CatBnAct`` that closes the encoder."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=DPN_BN_EPS)

    def forward(self, x: Tensor | Paths) -> Tensor:
        return torch.relu(self.bn(_cat(x)))


class DualPathBlock(nn.Module):
    """One DPN block: a ResNeXt bottleneck whose output is split between the two paths.

    The first ``residual`` output channels are added to the residual path, the remaining ``inc``
    are appended to the dense path. A stage's first block instead derives both incoming paths from
    a 1x1 projection of its input (``residual + 2 * inc`` channels, so the dense path starts at
    ``2 * inc``) and may downsample; the others take the previous block's paths as they are.
    """

    def __init__(self, in_chs: int, width: int, residual: int, inc: int,
                 project: bool = False, stride: int = 1):
        super().__init__()
        self.residual = residual
        # pytorch_zoo names the projection after its stride: c1x1_w_s1 or c1x1_w_s2.
        self.projection = f"c1x1_w_s{stride}" if project else None
        if self.projection:
            self.add_module(self.projection, BnReluConv(in_chs, residual + 2 * inc, 1, stride))
        self.c1x1_a = BnReluConv(in_chs, width, 1)
        self.c3x3_b = BnReluConv(width, width, 3, stride, groups=GROUPS)
        self.c1x1_c = BnReluConv(width, residual + inc, 1)

    def forward(self, x: Tensor | Paths) -> Paths:
        joined = _cat(x)
        if self.projection:
            shortcut = getattr(self, self.projection)(joined)
            res_in, dense_in = shortcut[:, : self.residual], shortcut[:, self.residual :]
        else:
            res_in, dense_in = x  # an unprojected block always follows another block
        out = self.c1x1_c(self.c3x3_b(self.c1x1_a(joined)))
        return res_in + out[:, : self.residual], torch.cat([dense_in, out[:, self.residual :]], dim=1)


def dpn_stage(in_chs: int, width: int, residual: int, inc: int, blocks: int,
              stride: int) -> tuple[list[DualPathBlock], int]:
    """A stage's blocks and its output channels (each block grows the dense path by ``inc``)."""
    layers = [DualPathBlock(in_chs, width, residual, inc, project=True, stride=stride)]
    channels = residual + 3 * inc
    for _ in range(blocks - 1):
        layers.append(DualPathBlock(channels, width, residual, inc))
        channels += inc
    return layers, channels


class UpConv(nn.Module):
    """Decoder step: nearest ×2 upsampling, 3x3 conv, ReLU (pytorch_zoo's ``UnetDecoderBlock``)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.layer = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                   nn.Conv2d(in_chs, out_chs, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class Fuse(nn.Module):
    """Merge a decoder output with its skip: concat (decoder first), 3x3 conv, ReLU
    (pytorch_zoo's ``ConvBottleneck``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, decoded: Tensor, skip: Tensor) -> Tensor:
        return self.seq(torch.cat([decoded, skip], dim=1))


class DPNUNet(nn.Module):
    """DPN-92 U-Net: N×C×H×W images (H, W multiples of 32) → N×``num_classes``×H×W logits.

    Encoder stages (``encoder_stages``) and the features they hand to the skips:
    0. 7x7/2 conv, BN, ReLU: 64 channels at 1/2;
    1. 3x3/2 max-pool, 3 blocks: 336 at 1/4;  2. 4 blocks: 704 at 1/8;
    3. 20 blocks: 1552 at 1/16;  4. 3 blocks, then BN+ReLU of both paths: 2688 at 1/32.
    Decoder: from the deepest features, ``decoder_stages[i]`` (up to stage i's channels) then
    ``bottlenecks`` (fuse with stage i's output), for i = 3..0; then ``last_upsample`` to full size
    and ``final``, a 3x3 conv to the logits. The deepest features feed no skip, only the decoder.
    """

    def __init__(self, num_classes: int = 3, in_channels: int = 3):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(in_channels, STEM_CHANNELS, 7, stride=2, padding=3, bias=False),
                             nn.BatchNorm2d(STEM_CHANNELS, eps=DPN_BN_EPS), nn.ReLU(inplace=True))
        stages: list[list[nn.Module]] = []
        filters = [STEM_CHANNELS]
        for index, (width, residual, inc, blocks) in enumerate(DPN92_STAGES):
            stride = 1 if index == 0 else 2  # the first stage is already downsampled by the max-pool
            layers, channels = dpn_stage(filters[-1], width, residual, inc, blocks, stride)
            stages.append(layers)
            filters.append(channels)
        # The stem's max-pool opens stage 1, so the 1/2-scale skip is the stem's output before pooling.
        stages[0].insert(0, nn.MaxPool2d(3, stride=2, padding=1))
        stages[-1].append(BnRelu(filters[-1]))
        self.filters = tuple(filters)  # (64, 336, 704, 1552, 2688)

        # Registered in pytorch_zoo's order so that state_dict() lists keys in the same order.
        self.bottlenecks = nn.ModuleList(Fuse(f) for f in reversed(filters[:-1]))
        self.decoder_stages = nn.ModuleList(UpConv(deep, shallow)
                                            for shallow, deep in zip(filters, filters[1:]))
        self.last_upsample = UpConv(STEM_CHANNELS, STEM_CHANNELS)
        self.final = nn.Sequential(nn.Conv2d(STEM_CHANNELS, num_classes, 3, padding=1))
        self.encoder_stages = nn.ModuleList([stem, *(nn.Sequential(*layers) for layers in stages)])

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"DPNUNet needs height and width multiples of 32, got {height}×{width}")
        skips = []
        for stage in self.encoder_stages:
            # Joining the paths once here serves both the skip and the next stage's first block.
            x = _cat(stage(x))
            skips.append(x)
        x = skips.pop()
        for up, fuse in zip(reversed(self.decoder_stages), self.bottlenecks):
            x = fuse(up(x), skips.pop())
        return self.final(self.last_upsample(x))
