"""The README and docs/: every relative link leads to a file, every #anchor to a heading, every command names a real
script and real options, every chapter link opens the video at the time it shows, and the README stays short."""

import importlib
import os
import re
import shlex
import zipfile
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 14 * 1024

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.M | re.S)  # ```...``` blocks
CODE_SPAN = re.compile(r"(`+)[^`\n].*?\1")  # `inline code`, on one line
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target)
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)  # [name]: target
HTML_SRC = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.I)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.M)
HTML_ID = re.compile(r"<[^>]+\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.I)
SCHEME = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)  # https:, mailto:, //host: not a file here
COMMAND = re.compile(r"(?:^|[\s!`(])(?:python|torchrun)\b[^\n`]*?\s([\w-]+)\.py\b([^\n`]*)")  # python x.py ...
OPTION = re.compile(r"(?:^|\s)--([A-Za-z_]+)")
VIDEO_AT = re.compile(r"\[(\d+):(\d\d):(\d\d)\]\(https://www\.youtube\.com/watch\?v=kCc8FmEb1nY&t=(\d+)s\)")


def without_code(text):
    """The text with code blocks blanked (keeping line numbers) and code spans replaced by a word."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return CODE_SPAN.sub("code", text)


def github_anchor(heading):
    """The anchor GitHub gives a heading: its text lowercased, punctuation but '-' and '_' removed, spaces to '-'."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text)  # html tags
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    """Every anchor a page defines: one per heading (a repeated heading gets -1, -2, ...) and html ids."""
    found = set()
    seen = {}
    for heading in HEADING.findall(FENCE.sub("", text)):
        anchor = github_anchor(heading)
        found.add(anchor if anchor not in seen else f"{anchor}-{seen[anchor]}")
        seen[anchor] = seen.get(anchor, 0) + 1
    found.update(HTML_ID.findall(text))
    return found


def links(text):
    """(line number, target) of every link and image in a page, outside code."""
    text = without_code(text)
    out = []
    for pattern in (LINK, REFERENCE, HTML_SRC):
        for m in pattern.finditer(text):
            out.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return sorted(out)


def problems(page, root=ROOT):
    """What is wrong with the relative links of one page: a file that does not exist, an anchor with no heading."""
    out = []
    for line, target in links(page.read_text(encoding="utf-8")):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        path = unquote(path.split("?")[0])
        file = page if not path else (root / path.lstrip("/") if path.startswith("/") else page.parent / path)
        file = file.resolve()
        where = f"{page.relative_to(root)}:{line}: {target}"
        if not file.is_relative_to(root.resolve()):
            out.append(f"{where}: leads outside the repository")
        elif not file.exists():
            out.append(f"{where}: {file.relative_to(root.resolve())} does not exist")
        elif anchor and file.suffix != ".md":
            out.append(f"{where}: an anchor into a file that is not markdown")
        elif anchor and unquote(anchor) not in anchors(file.read_text(encoding="utf-8")):
            out.append(f"{where}: no heading in {file.name} has the anchor #{anchor}")
    return out


def test_the_readme_and_the_docs_pages_are_found():
    assert (ROOT / "README.md").exists()
    assert len(PAGES) > 1, "docs/*.md is empty"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_every_anchor_to_a_heading(page):
    assert links(page.read_text(encoding="utf-8")), f"{page.name} has no links: the check would check nothing"
    assert problems(page) == []


def code_text(text):
    """Every code block line and code span of a page, one per line."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    spans = [m.group(0) for m in CODE_SPAN.finditer(FENCE.sub("", text))]
    return "\n".join(blocks + spans)


def known_options(script):
    """The --options a script takes: a lesson's hyperparameters (and --help), or bench.py's argparse options."""
    if script == "bench":
        return set(re.findall(r"add_argument\(\"--(\w+)\"", (ROOT / "bench.py").read_text(encoding="utf-8"))) | {"help"}
    return set(importlib.import_module(script).HYPERPARAMETERS) | {"help"}


def command_problems(text, root=ROOT):
    """Each command in a page's code that names a script that is not there or an option the script does not take."""
    out = []
    for script, rest in COMMAND.findall(code_text(text)):
        if not (root / f"{script}.py").exists():
            out.append(f"{script}.py: no such script")
            continue
        rest = re.sub(r"\s#.*", "", rest)  # a comment after the command
        known = known_options(script)
        if script == "bench" and re.search(r"--(script|sample_rung)\b", rest):  # these pass a lesson's settings on
            known |= set().union(*(known_options(lesson) for lesson in ("bigram", "v2", "gpt2")))
        out += [f"{script}.py --{name}: no such option" for name in OPTION.findall(rest) if name not in known]
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_names_a_real_script_and_its_real_options(page):
    assert command_problems(page.read_text(encoding="utf-8")) == []


def test_the_readme_has_commands_to_check():
    commands = COMMAND.findall(code_text((ROOT / "README.md").read_text(encoding="utf-8")))
    assert {script for script, _ in commands} >= {"bigram", "v2", "gpt2"}


def test_a_made_up_option_or_script_in_a_command_is_reported():
    text = ("```\npython v2.py --max_iters=10 --no_such_thing=1   # --not_checked\n!python nowhere.py\n```\n"
            "and `python bench.py --only=ladder --bogus` in a line; `python v2.py --sample` is fine\n")
    assert command_problems(text) == ["v2.py --no_such_thing: no such option", "nowhere.py: no such script",
                                      "bench.py --bogus: no such option"]


def test_every_chapter_link_opens_the_video_at_the_time_it_shows():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = VIDEO_AT.findall(text)
    assert len(links) == 30, "the video has 30 chapters"
    wrong = [f"{h}:{m}:{s} -> t={t}s" for h, m, s, t in links if int(h) * 3600 + int(m) * 60 + int(s) != int(t)]
    assert wrong == []


def test_every_test_a_page_names_is_a_test_in_tests():
    defined = set()
    for file in (ROOT / "tests").glob("test_*.py"):
        defined.update(re.findall(r"^def (test_\w+)", file.read_text(encoding="utf-8"), re.M))
    named = {(page.name, name) for page in PAGES
             for name in re.findall(r"`(test_\w+)`", page.read_text(encoding="utf-8"))}
    assert len(named) > 10, "the pages name their tests: the check would check nothing"
    assert sorted(f"{page}: {name}" for page, name in named if name not in defined) == []


def test_readme_is_at_most_14_kb():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size:,} bytes; move reference material into docs/"


@pytest.mark.parametrize("heading, anchor", [
    ("Quick start", "quick-start"),
    ("Look inside: what the model attends to", "look-inside-what-the-model-attends-to"),
    ("`gpt2.py`: GPT-2 and its training recipe", "gpt2py-gpt-2-and-its-training-recipe"),
    ("The video's chapters in the code", "the-videos-chapters-in-the-code"),
    ("Is my loss normal?", "is-my-loss-normal"),
    ("snake_case and [a link](x.md)", "snake_case-and-a-link"),
])
def test_anchors_follow_githubs_rule(heading, anchor):
    assert github_anchor(heading) == anchor


def test_a_repeated_heading_gets_a_numbered_anchor_and_code_is_not_a_heading():
    text = "# Title\n## Notes\n## Notes\n```bash\n# not a heading\n```\n"
    assert anchors(text) == {"title", "notes", "notes-1"}


def test_a_broken_link_a_missing_anchor_and_a_missing_image_are_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n## A section\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "# Page\n"
        "[fine](docs/other.md#a-section) [fine](#page) [web](https://example.com/x.md) `[code](nowhere.md)`\n"
        "[gone](docs/missing.md)\n"
        "[no such section](docs/other.md#b-section)\n"
        "[no such heading here](#nowhere)\n"
        '<img src="assets/missing.png" width="10">\n',
        encoding="utf-8")
    found = problems(page, root=tmp_path)
    assert [p.split(": ")[0] for p in found] == ["README.md:3", "README.md:4", "README.md:5", "README.md:6"]
    assert "docs/missing.md does not exist" in found[0]
    assert "#b-section" in found[1] and "#nowhere" in found[2]
    assert "assets/missing.png does not exist" in found[3]


def colab_cell():
    """The cell docs/devices.md gives to run on Google Colab: its first code block after the Colab heading."""
    page = (ROOT / "docs" / "devices.md").read_text(encoding="utf-8")
    return page.split("\n## Google Colab\n", 1)[1].split("```\n", 2)[1]


def test_the_colab_cell_finds_the_scripts_and_can_be_run_again(tmp_path, monkeypatch):
    content = tmp_path / "content"  # Colab's working folder
    content.mkdir()
    with zipfile.ZipFile(content / "gpt.zip", "w") as archive:  # a copy of the repository in a folder of its own
        for name in ("bigram.py", "plumbing.py", "requirements.txt"):
            archive.write(ROOT / name, f"gpt-main/{name}")
    ran = []

    def shell(line):  # a `!` line: unzip as `unzip -o` would (no question asked), the rest recorded where it ran
        words = shlex.split(line)
        if words[0] == "unzip":
            assert any(word.startswith("-") and "o" in word for word in words), "unzip asks before it replaces"
            zipfile.ZipFile(words[words.index("-d") - 1]).extractall(words[words.index("-d") + 1])
        else:
            ran.append((os.getcwd(), line))
    monkeypatch.chdir(content)
    namespace = {}
    for _ in range(2):  # a learner runs the cell, then runs it again
        for line in colab_cell().replace("/content", str(content)).splitlines():
            if line.startswith("!"):
                shell(line[1:])
            else:
                exec(line, namespace)
    scripts = str(content / "gpt" / "gpt-main")
    assert [where for where, line in ran if line.startswith("python bigram.py")] == [scripts, scripts]
