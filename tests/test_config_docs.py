"""docs/configuration.md's "Every key" table documents every key `show-config` prints, and no other.

A key is a field of the config dataclasses (bench.config), as ``config_to_dict`` writes it (what
``python -m bench show-config`` prints and what a run saves as ``config.yaml``). A new key without a row fails
here, and so does a row left behind by a key that was removed or renamed.
"""

import re

from helpers import REPO, TINY_CONFIG

from bench.config import config_to_dict, load_config

CONFIGURATION_DOC = REPO / "docs" / "configuration.md"


def printed_keys(section: dict, prefix: str = "") -> set[str]:
    """The dotted keys of a nested dict as ``show-config`` prints it (lists are values, not sections)."""
    keys = set()
    for name, value in section.items():
        key = f"{prefix}{name}"
        keys |= printed_keys(value, f"{key}.") if isinstance(value, dict) else {key}
    return keys


def documented_keys(markdown: str) -> set[str]:
    """The keys in the first column of the "Every key" table.

    A cell may name several keys of one section: ```train.batch_size`, `lr`, `momentum``` is
    ``train.batch_size``, ``train.lr`` and ``train.momentum`` (a name without a dot belongs to the first's section).
    """
    section = markdown.split("\n## Every key\n", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) < 4 or not cells[1].strip().startswith("`"):
            continue
        names = re.findall(r"`([^`]+)`", cells[1])
        parent = names[0].rpartition(".")[0]
        keys |= {names[0]} | {name if "." in name or not parent else f"{parent}.{name}" for name in names[1:]}
    return keys


def test_documented_keys_reads_a_row_of_several_keys_of_one_section():
    table = ("# Configuration\n\n## Every key\n\n| key | default | meaning |\n|---|---|---|\n| `seed` | 0 | |\n"
             "| `train.augment.hflip`, `crop_scale` | true, [0.5, 1.0] | |\n| `model.lse_r`, `gem_p` | 5, 3 | |\n"
             "\n## Next\n| `not.a.key` | | |\n")
    assert documented_keys(table) == {"seed", "train.augment.hflip", "train.augment.crop_scale", "model.lse_r",
                                      "model.gem_p"}


def test_every_key_show_config_prints_is_documented_in_configuration_md():
    printed = printed_keys(config_to_dict(load_config(TINY_CONFIG)))
    documented = documented_keys(CONFIGURATION_DOC.read_text(encoding="utf-8"))
    assert {"name", "dataset.object_scale", "train.augment.crop_scale", "wsol.head_channels"} <= printed
    assert sorted(printed - documented) == [], "keys show-config prints that docs/configuration.md does not document"
    assert sorted(documented - printed) == [], "keys docs/configuration.md documents that no config has"
