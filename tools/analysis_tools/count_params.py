"""Print the parameter counts of every FishNet variant (the README's model table).

python tools/analysis_tools/count_params.py
"""

import argparse

from mmfish.models import FishNet


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    argparse.ArgumentParser(
        description='Print the parameters of every FishNet variant as a Markdown table: the '
        'classifier (1000 classes), the detection backbone without and with its out norms.'
    ).parse_args()
    print(
        '| variant | classifier (1000 classes) | backbone, out_norm=False '
        '| backbone, out_norm=True |'
    )
    print('|---|---|---|---|')
    for arch in FishNet.arch_settings:
        classifier = count(FishNet(arch, out_norm=False, num_classes=1000))
        raw = count(FishNet(arch, out_norm=False))
        normed = count(FishNet(arch))
        print(f'| {arch} | {classifier:,} | {raw:,} | {normed:,} |')


if __name__ == '__main__':
    main()
