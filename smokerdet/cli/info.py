"""``smokerdet info``."""

from __future__ import annotations

from smokerdet.cli._options import JsonOpt


def info(json_out: JsonOpt = False) -> None:
    """Show versions, the device, the data dir and the models found there.

    Example:

    \b
        smokerdet info --json
    """
    from smokerdet.cli._output import print_json, render_info
    from smokerdet.models import gather_info

    result = gather_info()
    print_json(result.to_dict()) if json_out else render_info(result)
