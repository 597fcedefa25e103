"""A figure style readable in print, and the label every smoke-profile result carries."""

from __future__ import annotations

__all__ = ["SMOKE_NOTE", "profile_note", "use_print_style"]

SMOKE_NOTE = (
    "smoke profile: reduced settings on the CPU (synthetic data where the paper uses a dataset); "
    "numbers are not comparable to the paper's"
)


def profile_note(profile: str, short: bool = False) -> str:
    """One line saying which profile produced a result and what that means."""
    if profile == "full":
        return "full profile: the paper's settings (choices it leaves open: see the paper's README)"
    return "smoke profile — not comparable to the paper" if short else SMOKE_NOTE


def use_print_style() -> None:
    """Seaborn's paper context with white grid, colour-blind palette and vector-friendly fonts."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.2)
    mpl.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 200,
            "savefig.bbox": "tight",
            "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by publishers
            "axes.titleweight": "bold",
            "legend.frameon": True,
        }
    )
