"""The export report on Monte Carlo sites: every dropout layer, and how much runs T times.

For each dropout layer of the model: whether it is sampled, its class, rate and mask shape (noise
shape without the batch axis; ``(1, 1, 1)`` for drop path), and the share of the network's work that
depends on it (:mod:`export.checks.cost`). With trunk caching, everything that depends on no sampled mask
runs once per image and the rest once per image and pass. Drop-path sites early in a network make
almost all of it run T times; the report then suggests ``--mc-layers`` with the other sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from export.checks.cost import GraphCost
from scorer.contract import DropoutSite, mask_inputs

HINT_SHARE = 0.5  # suggest --mc-layers when drop path makes more than this share run T times


@dataclass(frozen=True)
class SiteReport:
    """The report's lines and the share of the work that runs once per pass."""

    lines: list[str]
    per_pass_share: float
    hint: str | None


def site_sources(k: int) -> set[str]:
    """Both possible mask inputs of site ``k`` (a graph has the second only for alpha dropout)."""
    return set(mask_inputs(k, additive=True))


def site_report(
    sites: Sequence[DropoutSite], sampled: Sequence[int], cost: GraphCost, trunk: str
) -> SiteReport:
    """Report on ``sites`` (every candidate, numbered as mask inputs of the graph ``cost`` was made
    from), of which ``sampled`` are sampled, with trunk mode ``trunk``."""
    chosen = set().union(*(site_sources(k) for k in sampled)) if sampled else set()
    share = 1.0 if trunk == "input" else cost.share_after(chosen)
    lines = [f"{len(sampled)} of {len(sites)} dropout layers sampled; {_percent(share)} of the "
             f"network runs once per pass, {_percent(1 - share)} once per image (trunk {trunk})"]
    after = [cost.share_after(site_sources(k)) for k in range(len(sites))]
    for k in sorted(range(len(sites)), key=lambda k: -after[k]):  # from the input to the output
        site = sites[k]
        mark = "sampled" if k in sampled else "off    "
        path = " drop path" if site.drop_path else ""
        lines.append(f"  {mark} {site.path or site.name} ({site.layer_class or site.kind}{path}) "
                     f"rate {site.rate:g}, mask {tuple(site.mask_shape)}: "
                     f"{_percent(after[k])} of the network after it")
    if cost.unknown:
        lines.append(f"  (shares approximate: {cost.unknown} nodes of unknown shape not counted)")
    hint = _hint(sites, sampled, cost, share) if trunk == "cached" else None
    return SiteReport(lines, share, hint)


def _hint(sites: Sequence[DropoutSite], sampled: Sequence[int], cost: GraphCost,
          share: float) -> str | None:
    drop_paths = [k for k in sampled if sites[k].drop_path]
    if not drop_paths or share <= HINT_SHARE:
        return None
    others = [k for k in range(len(sites)) if not sites[k].drop_path]
    if not others:
        return (f"{len(drop_paths)} drop-path sites make {_percent(share)} of the network run once "
                "per pass, so trunk caching saves little; choose the sites to sample with "
                "--mc-layers NAME,... (names or globs; later layers cache more)")
    rest = cost.share_after(set().union(*(site_sources(k) for k in others)))
    names = ",".join(sites[k].name for k in others)
    return (f"{len(drop_paths)} drop-path sites make {_percent(share)} of the network run once per "
            f"pass, so trunk caching saves little. To sample only the other dropout layers "
            f"(the usual MC dropout recipe), export with --mc-layers '{names}': "
            f"{_percent(rest)} of the network would run once per pass")


def _percent(share: float) -> str:
    if 0 < share < 0.001:
        return "<0.1%"
    return f"{100 * share:.1f}%"


__all__ = ["SiteReport", "site_report"]
