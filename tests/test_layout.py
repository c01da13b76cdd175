"""The lesson is the file; plumbing.py holds the rest: the layout of the scripts, read from their sources with ast."""

import ast
import builtins
import re
import sys

import pytest
from conftest import ROOT, SCRIPTS, import_script

OTHER_FILES = {"bigram", "v2", "gpt2", "bench"}  # what a script never imports
MAX_FUNCTION_LINES = 60
MAX_LINES = {"bigram": 250, "v2": 370, "gpt2": 950, "plumbing": 750}
LESSON_ORDER = ("load_data", "encode", "decode", "get_batch", "eval_windows", "estimate_loss", "nn.Module",
                "train", "generate_text", "sample_next", "main")  # "nn.Module": the first class of the model
HYPERPARAMETER_LINE = re.compile(r"^([a-z_][a-z0-9_]*) = (\S.*?)  # (\S.*)$")
GROUP_HEADING = re.compile(r"^# [a-z][a-z ,]*$")


def source(name):
    return (ROOT / f"{name}.py").read_text(encoding="utf-8")


def tree(name):
    return ast.parse(source(name))


def imported_modules(node):
    """The modules an import statement names: `import a.b` -> a.b, `from a import b` -> a."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module] if isinstance(node, ast.ImportFrom) else []


def plumbing_names():
    """The names plumbing.py defines at its top level: functions, classes and assigned constants."""
    names = set()
    for node in tree("plumbing").body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names.update(name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name))
    return names


def hyperparameter_lines(script):
    """{name: (value source, comment)} of the hyperparameter block, whose other lines are `# group` headings."""
    lines = source(script).splitlines()
    block = lines[lines.index("# hyperparameters") + 1:]
    block = block[:next(i for i, line in enumerate(block) if line.startswith("# every name above"))]
    bad = [line for line in block if not HYPERPARAMETER_LINE.match(line) and not GROUP_HEADING.match(line)]
    assert not bad, f"{script}.py: neither `name = value  # comment` nor a `# group` heading: {bad}"
    return {m[1]: (m[2], m[3]) for m in map(HYPERPARAMETER_LINE.match, block) if m}


# --- imports ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_imports_plumbing_saying_it_is_not_in_the_video(script):
    lines = source(script).splitlines()
    imports = [node for node in ast.walk(tree(script)) if "plumbing" in imported_modules(node)]
    assert len(imports) == 1 and isinstance(imports[0], ast.Import), f"{script}.py: {len(imports)} plumbing imports"
    line = lines[imports[0].lineno - 1]
    assert line.startswith("import plumbing  # not in the video"), f"{script}.py: {line!r}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_imports_no_other_script(script):
    found = {module.split(".")[0] for node in ast.walk(tree(script)) for module in imported_modules(node)}
    assert not found & OTHER_FILES, f"{script}.py imports {found & OTHER_FILES}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_use_of_plumbing_is_plumbing_dot_a_name_plumbing_defines(script):
    nodes = list(ast.walk(tree(script)))
    attributes = {id(node.value): node.attr for node in nodes if isinstance(node, ast.Attribute)}
    uses = [node for node in nodes if isinstance(node, ast.Name) and node.id == "plumbing"]
    assert uses, f"{script}.py never uses plumbing"
    bare = [node.lineno for node in uses if id(node) not in attributes]
    assert not bare, f"{script}.py uses plumbing other than as plumbing.X at lines {bare}"
    unknown = {attributes[id(node)] for node in uses} - plumbing_names()
    assert not unknown, f"{script}.py uses names plumbing.py does not define: {unknown}"


# --- size ---
@pytest.mark.parametrize("name", [*SCRIPTS, "plumbing"])
def test_no_function_is_longer_than_60_lines(name):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree(name))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{name}.py: {long}"


@pytest.mark.parametrize("name", MAX_LINES)
def test_each_file_stays_within_its_line_cap(name):
    n_lines = len(source(name).splitlines())
    assert n_lines <= MAX_LINES[name], f"{name}.py has {n_lines} lines, more than {MAX_LINES[name]}"


# --- the lesson's order ---
def defines(node, part):
    """Whether a top-level node is part: a function by its name, or ("nn.Module") a class of the model."""
    if part == "nn.Module":
        return isinstance(node, ast.ClassDef) and any(ast.unparse(base) == "nn.Module" for base in node.bases)
    return isinstance(node, ast.FunctionDef) and node.name == part


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_lesson_comes_in_the_videos_order_then_main_then_the_entry_point(script):
    body = tree(script).body
    found = {part: next((node.lineno for node in body if defines(node, part)), None) for part in LESSON_ORDER}
    assert None not in found.values(), f"{script}.py lacks {[part for part, line in found.items() if line is None]}"
    assert list(found.values()) == sorted(found.values()), f"{script}.py: not in the video's order: {found}"
    assert isinstance(body[-1], ast.If) and ast.unparse(body[-1].test) == "__name__ == '__main__'"


@pytest.mark.parametrize("script", SCRIPTS)
def test_importing_a_script_prints_nothing_and_reads_no_argv_or_file(script, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no input.txt here: reading or downloading it would print or create files
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--batch_size=7", "--no_such_option"])
    monkeypatch.delitem(sys.modules, script, raising=False)  # import afresh; the cached module comes back after
    opened, real_open = [], builtins.open

    def recording_open(file, *args, **kwargs):
        opened.append(file)
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", recording_open)
    module = import_script(script)
    monkeypatch.setattr(builtins, "open", real_open)
    assert capsys.readouterr() == ("", "")
    assert module.HYPERPARAMETERS["batch_size"] != 7
    assert opened == []
    assert list(tmp_path.iterdir()) == []


# --- the hyperparameter block ---
@pytest.mark.parametrize("script", SCRIPTS)
def test_hyperparameters_section_lists_every_option_as_name_value_comment(script):
    defaults = import_script(script).HYPERPARAMETERS
    lines = hyperparameter_lines(script)
    assert list(lines) == list(defaults)
    for name, (value, _) in lines.items():
        assert ast.literal_eval(value) == defaults[name], name
        assert type(ast.literal_eval(value)) is type(defaults[name]), name


def test_hyperparameters_shared_across_scripts_have_identical_comments():
    comments = {script: {name: comment for name, (_, comment) in hyperparameter_lines(script).items()}
                for script in SCRIPTS}
    names = sorted(set().union(*comments.values()))
    differing = []
    for name in names:
        seen = {script: found[name] for script, found in comments.items() if name in found}
        if len(set(seen.values())) > 1:
            differing.append(f"{name}: " + "; ".join(f"{script}.py {comment!r}" for script, comment in seen.items()))
    assert not differing, "shared hyperparameters commented differently:\n" + "\n".join(differing)
