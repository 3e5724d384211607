"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML file
(figures embedded as base64), so both always say the same thing."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd


def inline(text: str) -> str:
    """Text as HTML, with the Markdown bold the report uses (``**finding**``) kept bold."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


class Document:
    def __init__(self) -> None:
        self.blocks: list[tuple[str, object]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append((f"h{level}", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, frame: pd.DataFrame, floatfmt: str = "{:.4g}") -> None:
        shown = frame.copy()
        for col in shown.columns:
            if pd.api.types.is_float_dtype(shown[col]):
                shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else floatfmt.format(v))
        self.blocks.append(("table", shown.astype(str)))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", (path, caption)))

    def markdown(self, base: Path) -> str:
        out = []
        for kind, value in self.blocks:
            if kind.startswith("h"):
                out.append("#" * int(kind[1]) + " " + value)
            elif kind == "p":
                out.append(value)
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                cols = list(value.columns)
                rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                rows += ["| " + " | ".join(r) + " |" for r in value.itertuples(index=False)]
                out.append("\n".join(rows))
            elif kind == "img":
                path, caption = value
                out.append(f"![{caption}]({path.relative_to(base)})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
               "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
               "table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:2px 6px}"
               "img{max-width:100%}</style></head><body>"]
        for kind, value in self.blocks:
            if kind.startswith("h"):
                out.append(f"<{kind}>{html.escape(value)}</{kind}>")
            elif kind == "p":
                out.append(f"<p>{inline(value)}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(c)}</th>" for c in value.columns)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                               for r in value.itertuples(index=False))
                out.append(f"<table><tr>{head}</tr>{body}</table>")
            elif kind == "img":
                path, caption = value
                data = base64.b64encode(path.read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        return "".join(out) + "</body></html>\n"
