"""The documentation a newcomer reads (#29.4): the README's generated table and docs/metrics.md are what
docs/build.py makes from the configuration, every link between the pages lands on a file and a heading,
and the example overlay the real-Spark quickstart copies is a valid one."""
import re
import subprocess
import sys

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted(p for p in ROOT.glob("*/README.md") if p.parent.name not in (".venv", "var"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page) -> set:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_the_generated_parts_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_link_lands_on_a_file_and_a_heading():
    broken = []
    for page in PAGES:
        for target in LINK.findall(re.sub(r"```.*?```", "", page.read_text(), flags=re.S)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_starts_with_what_it_is_and_reaches_every_reference_page():
    readme = (ROOT / "README.md").read_text()
    intro = readme.split("\n## ", 1)[0].strip().splitlines()[1:]
    assert len([line for line in intro if line.strip()]) <= 10, "the README's first section: ten lines at most"
    linked = set(re.findall(r"\(docs/([\w-]+\.md)", readme))
    assert linked == {p.name for p in (ROOT / "docs").glob("*.md")}, "every docs/ page has a row in the README"


def test_the_example_overlay_is_valid():
    from configs import load
    cfg = load(ROOT / "docs" / "my-rig.example.yaml")
    assert cfg.stacks["stackB"].kvbm_metrics_url.endswith(":6880/metrics")
    assert cfg.profiles["spill"].tier2_path.startswith("/nvme/")
