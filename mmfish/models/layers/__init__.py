from .channel_reduction import ChannelReduction, channel_reduction
from .memory_format import nhwc_to_nchw_copy, same_memory_format, to_nchw
from .sync_bn import CPUSyncBatchNorm

__all__ = [
    'CPUSyncBatchNorm',
    'ChannelReduction',
    'channel_reduction',
    'nhwc_to_nchw_copy',
    'same_memory_format',
    'to_nchw',
]
