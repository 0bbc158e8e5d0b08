# The tests' tiny FishNet, written here only: a FishNet of one block per stage and narrow
# channels; its features 0-10 have 16, 16, 32, 64, 64, 96, 64, 48, 112, 208 and 272 channels.
# A config base of the tiny configs (tiny_shapes_config.py, tiny_seg_config.py); tests that build
# a FishNet read it with mmfish.testing.tiny_arch().
tiny_arch = dict(
    _delete_=True,
    stem_channels=16,
    tail_channels=(16, 32, 64),
    body_channels=(64, 48, 32),
    tail_blocks=(1, 1, 1),
    bridge_blocks=1,
    body_blocks=(1, 1, 1),
    head_blocks=(1, 1, 1),
    body_transfer_blocks=(1, 1, 1),
    head_transfer_blocks=(1, 1, 1),
)
