"""The dashboard's main script: ``streamlit run dashboard/app.py`` (or
``python -m dashboard``, which sets the options we rely on).

The environment comes from ``MLOPS_ENV`` (``local`` by default), like every command.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).parent / "views"
PAGES = (
    ("executions.py", "Pipeline executions", ":material/account_tree:"),
    ("models.py", "Model versions", ":material/inventory_2:"),
    ("drift.py", "Drift", ":material/monitoring:"),
    ("predictions.py", "Predictions", ":material/bar_chart:"),
)


def main() -> None:
    st.set_page_config(page_title="Churn model health", layout="wide")
    pages = [
        st.Page(VIEWS / name, title=title, icon=icon, default=index == 0)
        for index, (name, title, icon) in enumerate(PAGES)
    ]
    st.navigation(pages).run()


if __name__ == "__main__":
    main()
