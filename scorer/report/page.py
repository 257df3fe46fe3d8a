"""The report's HTML: one self-contained page (inline CSS, figures and thumbnails as data URIs).

No scripts, no external resources: it opens offline in any browser. The layout is a single
column that fits a phone; wide tables scroll inside their own box.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from scorer.report.analysis import COVERAGES, MEASURE_TITLES, Analysis, output_names
from scorer.report.thumbs import Tile

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#fafafa;line-height:1.45}
main{max-width:1040px;margin:0 auto;padding:12px 16px 48px}
h1{font-size:1.45rem;margin:.6em 0 .2em}h2{font-size:1.2rem;margin-top:1.8em;
border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1rem;margin-top:1.2em}
p,li{max-width:72ch}.muted{color:#666;font-size:.9rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(125px,1fr));gap:8px;margin:12px 0}
.card{background:#fff;border:1px solid #e3e3e3;border-radius:8px;padding:8px 10px}
.card b{display:block;font-size:1.25rem}.card span{font-size:.8rem;color:#555}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:8px 0}
table{border-collapse:collapse;background:#fff;font-size:.88rem}
th,td{border:1px solid #e3e3e3;padding:4px 8px;text-align:left}
td{white-space:nowrap}.n{text-align:right}th{background:#f1f1f1;min-width:4em}
figure{margin:12px 0}figure img{max-width:100%;height:auto;background:#fff;border:1px solid #eee}
.panels{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:6px}
.panels img{width:100%}
figcaption{font-size:.85rem;color:#555}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:10px}
.tile{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:6px;font-size:.78rem;
overflow-wrap:anywhere}
.tile img{width:100%;max-width:128px;height:auto;display:block;margin:0 auto 4px;
image-rendering:pixelated}
.missing{height:96px;display:flex;align-items:center;justify-content:center;text-align:center;
background:#f3f3f3;color:#777;margin-bottom:4px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:10px 0}
dt{font-weight:600;margin-top:.6em}dd{margin-left:1.2em}
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    numeric = [bool(rows) and not isinstance(rows[0][i], str) for i in range(len(headers))]
    head = "".join(f"<th class=n>{escape(h)}</th>" if n else f"<th>{escape(h)}</th>"
                   for h, n in zip(headers, numeric, strict=True))
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" if isinstance(c, str) else
                                    f"<td class=n>{escape(_fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


Panels = Sequence[tuple[str, bytes]]
"""A figure as ``(alt text, PNG bytes)`` panels: one image, or small multiples laid out in a grid."""


def _figure(panels: Panels | None, caption: str) -> str:
    if not panels:
        return ""
    images = "".join(f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" '
                     f'alt="{escape(alt)}">' for alt, png in panels)
    if len(panels) > 1:
        images = f"<div class=panels>{images}</div>"
    return f"<figure>{images}<figcaption>{caption}</figcaption></figure>"


def _title(name: str) -> str:
    return MEASURE_TITLES.get(name, name)


def _cards(analysis: Analysis, numbers: Mapping[str, Any]) -> str:
    results = numbers["results"]
    cards = [("images", _fmt(results["rows"])), ("scored", _fmt(results["scored"])),
             ("failed", _fmt(results["failed"]))]
    if analysis.classification:
        cards += [("accuracy", _fmt(analysis.classification["accuracy"], 3)),
                  ("ECE (15 bins)", _fmt(analysis.classification["ece"]))]
    if "mutual_information" in analysis.selective:
        cards.append(("AURC (MI)", _fmt(analysis.selective["mutual_information"].aurc)))
    for name in ("mutual_information", "predictive_entropy", "std"):
        if name in analysis.ood:
            cards.append((f"OOD AUROC ({_title(name)})", _fmt(analysis.ood[name].auroc, 3)))
            break
    return '<div class="cards">' + "".join(
        f"<div class=card><b>{escape(v)}</b><span>{escape(k)}</span></div>" for k, v in cards) + "</div>"


def _glance(analysis: Analysis) -> str:
    """One row per measure: how well it tracks errors and flags OOD images."""
    names = list(analysis.selective) or list(analysis.ood)
    if not names:
        return ""
    headers, columns = ["ranked by"], []
    if analysis.selective:
        headers += ["AURC", "misclassification AUROC"]
        columns += [lambda n: analysis.selective[n].aurc,
                    lambda n: analysis.selective[n].misclassification_auroc]
    if analysis.ood:
        headers += ["OOD AUROC", "OOD flagged @ 95% in kept"]
        columns += [lambda n: analysis.ood[n].auroc,
                    lambda n: None if analysis.ood[n].flagging is None
                    else analysis.ood[n].flagging.ood_flagged]
    rows = [[_title(n)] + [column(n) for column in columns] for n in names]
    return ("<h2>At a glance</h2><p class=muted>Does the uncertainty track errors (lower AURC, "
            "higher misclassification AUROC) and flag out-of-distribution images (higher OOD "
            "AUROC)? Details and definitions below.</p>" + _table(headers, rows))


def _labels_notes(analysis: Analysis) -> str:
    notes = []
    counts, kind = analysis.label_counts, analysis.table.info.kind
    if analysis.table.label_codes is None:
        notes.append("The file has no labels (images were not in class folders): accuracy, "
                     "calibration and OOD sections need labels.")
    if analysis.other_labels:
        shown = ", ".join(f"'{k}' ({v:,})" for k, v in list(analysis.other_labels.items())[:12])
        if kind == "probabilities":
            notes.append(f"{counts['other']:,} scored images carry labels that are neither a class "
                         f"of the model nor an --ood label: {shown}. They count as unknown and are "
                         "left out of accuracy and OOD numbers; pass --ood LABEL for folders of "
                         "out-of-distribution images.")
        else:
            notes.append(f"This {kind} head has no classes: labels other than --ood ({shown}) are "
                         "taken as in-distribution images.")
    for label in analysis.missing_ood_labels:
        notes.append(f"--ood {label!r} matches no image label.")
    if counts["unlabelled"] and analysis.table.label_codes is not None:
        notes.append(f"{counts['unlabelled']:,} scored images have no label.")
    return "".join(f'<p class="note">{escape(n)}</p>' for n in notes)


def _distributions(analysis: Analysis, figures: Mapping[str, Panels]) -> str:
    rows = [[_title(name)] + [q[k] if q else None for k in ("mean", "median", "p10", "p90", "max")]
            for name, q in analysis.distributions.items()]
    parts = ["<h2>Uncertainty distributions</h2>",
             _table(["measure", "mean", "median", "10%", "90%", "max"], rows),
             _figure(figures.get("distributions"), "All scored images. Entropies and mutual "
                     "information in nats; variation ratio = 1 - (passes voting for the modal "
                     "class) / T.")]
    if "correct_wrong" in figures:
        parts.append(_figure(figures["correct_wrong"], "Labelled images: correct vs wrong "
                             "predictions (share of each group)."))
    if "scatter" in figures:
        parts.append(_figure(figures["scatter"], _scatter_caption(analysis)))
    return "".join(parts)


def _scatter_caption(analysis: Analysis) -> str:
    scatter, info = analysis.table.scatter, analysis.table.info
    text = ("Binary sigmoid head: std of P(positive class) against P(positive class)."
            if info.binary_sigmoid else "Std of each image's predicted class against its mean "
            "probability." if info.kind == "probabilities" else
            "Std against mean of every output (pooled).")
    if scatter is not None and scatter.sampled:
        text += (f" A uniform random sample of {scatter.rows_shown:,} of the {scatter.rows_total:,} "
                 "scored images is drawn; all numbers use every image.")
    return escape(text)


def _classification(analysis: Analysis, figures: Mapping[str, Panels]) -> str:
    c = analysis.classification
    if c is None:
        return ""
    parts = ["<h2>Accuracy and calibration</h2>",
             f"<p>{c['images']:,} scored images whose label is a class of the model.</p>",
             _table(["accuracy", "NLL (nats)", "Brier", "ECE"],
                    [[c["accuracy"], c["nll"], c["brier"], c["ece"]]]),
             f"<p class=muted>ECE: {c['ece_bins']} equal-width bins on the top-label confidence "
             "(max mean probability), bin b holding (b/15, (b+1)/15]; sum over bins of "
             "|accuracy - confidence| weighted by the share of images in the bin.</p>",
             _figure(figures.get("reliability"), "Reliability diagram: accuracy and mean confidence "
                     "per bin; the images in each bin below.")]
    parts.append("<h2>Selective prediction</h2>")
    rows = [[_title(name), s.aurc, *[s.accuracy_at[v] for v in COVERAGES], s.misclassification_auroc]
            for name, s in analysis.selective.items()]
    parts.append(_table(["ranked by", "AURC", *[f"accuracy @ {round(v * 100)}% kept" for v in COVERAGES],
                         "misclassification AUROC"], rows))
    parts.append(_figure(figures.get("rejection"), "The most uncertain images are rejected first; "
                         "max probability is the usual baseline. Lower AURC is better."))
    fraction = analysis.options.flag_fraction
    flagged = [[_title(name), f.threshold, f.flagged, f.accuracy_flagged, f.accuracy_rest]
               for name, f in analysis.flagged.items() if f is not None]
    parts.append(f"<h3>Flagging the {fraction:.0%} most uncertain images</h3>")
    parts.append(_table(["ranked by", "threshold (>=)", "flagged", "accuracy flagged",
                         "accuracy rest"], flagged))
    return "".join(parts)


def _ood(analysis: Analysis, figures: Mapping[str, Panels]) -> str:
    if not analysis.ood:
        if analysis.options.ood_labels:
            return ("<h2>Out-of-distribution detection</h2><p>Needs scored images of both an "
                    "--ood label and in-distribution labels; this file lacks one of them.</p>")
        return ""
    n_in, n_out = analysis.ood_counts
    rows = [[_title(name), o.auroc, o.aupr, o.fpr_at_95_tpr,
             None if o.flagging is None else o.flagging.ood_flagged]
            for name, o in analysis.ood.items()]
    labels = ", ".join(analysis.options.ood_labels)
    return "".join([
        "<h2>Out-of-distribution detection</h2>",
        f"<p>{n_in:,} in-distribution vs {n_out:,} OOD images (labels: {escape(labels)}); OOD is "
        "the positive class, higher uncertainty flags it.</p>",
        _table(["score", "AUROC", "AUPR", "FPR @ 95% TPR", "OOD flagged @ 95% in kept"], rows),
        "<p class=muted>The last column: the threshold keeps 95% of in-distribution images; the "
        "share of OOD images above it.</p>",
        _figure(figures.get("ood"), "In-distribution vs OOD images (share of each group).")])


def _outputs(analysis: Analysis) -> str:
    rows = analysis.outputs
    if not rows:
        return ""
    kind = analysis.table.info.kind
    columns = [("name", "output"), ("mean", "mean"), ("mean_std", "mean std"), ("max_std", "max std")]
    if kind == "multilabel":
        columns += [("share_above_half", "share > 0.5"), ("mean_label_mi", "mean MI")]
    if kind == "probabilities":
        columns += [("predicted", "predicted"), ("images", "labelled"), ("recall", "recall")]
    title = {"probabilities": "Per class", "multilabel": "Per label", "values": "Per output"}[kind]
    return f"<h2>{title}</h2>" + _table([c[1] for c in columns],
                                        [[r.get(k) for k, _ in columns] for r in rows])


def _gallery(title: str, tiles: Sequence[Tile]) -> str:
    if not tiles:
        return ""
    items = []
    for tile in tiles:
        picture = (f'<img src="{tile.image}" alt="{escape(tile.path)}">' if tile.image else
                   f'<div class="missing">{escape(tile.problem or "")}</div>')
        facts = "<br>".join(f"{escape(k)}: {escape(v)}" for k, v in tile.facts)
        items.append(f'<div class="tile">{picture}<div>{escape(tile.path)}</div>{facts}</div>')
    return f"<h3>{escape(title)}</h3><div class=gallery>{''.join(items)}</div>"


def _failures(analysis: Analysis, examples: Mapping[str, list[tuple[str, str]]]) -> str:
    if not analysis.failures:
        return "<h2>Failed images</h2><p>None: every image was scored.</p>"
    rows = [[reason, count, "; ".join(p + (f" ({d})" if d else "") for p, d in examples.get(reason, []))]
            for reason, count in sorted(analysis.failures.items(), key=lambda kv: -kv[1])]
    return "<h2>Failed images</h2>" + _table(["reason", "images", "examples"], rows)


DEFINITIONS = """
<h2>Definitions</h2><dl>
<dt>Entropies</dt><dd>Natural log, in nats. Predictive entropy H[m] = -sum_c m_c log m_c of the
mean probabilities m (total uncertainty); expected entropy = mean over the T passes of each pass's
entropy (aleatoric); mutual information = predictive - expected entropy (epistemic, BALD).
Multi-label heads: sums over labels of the Bernoulli entropies.</dd>
<dt>Variation ratio</dt><dd>1 - (passes voting for the modal class) / T.</dd>
<dt>std</dt><dd>Standard deviation over passes of the predicted class's probability (mean over
outputs for multi-label and regression heads).</dd>
<dt>Max probability</dt><dd>The baseline: images ranked by 1 - max mean probability.</dd>
<dt>AURC</dt><dd>Area under the selective-risk vs coverage curve: keep the k most confident images
(k = 1..n), risk = error rate among them, AURC = mean risk over k. Ties count as a random order.</dd>
<dt>ECE</dt><dd>Sum over 15 equal-width confidence bins of |accuracy - mean confidence|, weighted
by the share of images in the bin.</dd>
<dt>NLL, Brier</dt><dd>Mean of -log p(true class) (p clipped at 1e-12) and of
sum_c (m_c - 1[c = true])^2.</dd>
<dt>AUROC, AUPR, FPR @ 95% TPR</dt><dd>Uncertainty as the score, wrong predictions (or OOD
images) as positives; AUPR is average precision.</dd></dl>
"""


def render(analysis: Analysis, numbers: Mapping[str, Any], figures: Mapping[str, Panels],
           galleries: Mapping[str, Sequence[Tile]],
           examples: Mapping[str, list[tuple[str, str]]]) -> str:
    """The whole page as a string."""
    info = analysis.table.info
    name = escape(info.path.name)
    classes = len(output_names(analysis.table))
    ranking = _title(analysis.table.ranking_measure)
    header = (f"<h1>mcd-score report: {name}</h1><p class=muted>{escape(info.kind)} head, "
              f"{classes} outputs, T = {info.passes if info.passes is not None else '?'} passes, "
              f"schema version {info.schema_version if info.schema_version is not None else '?'}."
              "</p>")
    body = [header, _cards(analysis, numbers), _labels_notes(analysis), _glance(analysis),
            _distributions(analysis, figures),
            _classification(analysis, figures), _ood(analysis, figures), _outputs(analysis)]
    if any(galleries.values()):
        body.append(f"<h2>Images</h2><p class=muted>Ordered by {escape(ranking)}.</p>")
        body.append(_gallery("Most uncertain", galleries.get("most", ())))
        body.append(_gallery("Least uncertain", galleries.get("least", ())))
    body += [_failures(analysis, examples), DEFINITIONS]
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>mcd-score report: {name}</title>'
            f"<style>{CSS}</style></head><body><main>{''.join(body)}</main></body></html>")
