"""The dashboard's pages: each module's ``render()`` draws one page.

Streamlit runs these files as scripts (``__name__ == "__main__"``); importing them has
no side effects.
"""
