"""Terraform gate: fmt, offline init + validate of every root, `terraform test`, README tables,
the non-US plan refusal, and checkov.

Everything that writes (init, test, plan, checkov) runs in a temporary copy of `terraform/` and
`infra/` (the gateway module renders infra's cloud-init template), so no `.terraform` folder or
lock-file change ever lands in the working tree.

Providers come from a local filesystem mirror, never from the registry: `TACET_TF_PLUGIN_DIR`
if set, else Terraform's implied local-mirror folders, else a glob over `/opt/*`. Without the
`terraform` binary the tests skip; with it but without a mirror they fail, naming the variable.
checkov is optional (its pins conflict with the project's); its test skips when it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
PLUGIN_DIR_VARIABLE = "TACET_TF_PLUGIN_DIR"
CHECKOV_VARIABLE = "TACET_CHECKOV"
AWS_PROVIDER = Path("registry.terraform.io", "hashicorp", "aws")
US_REGIONS = ("us-east-1", "us-east-2", "us-west-1", "us-west-2")
# Terraform's implied local mirrors on Unix (relative to $HOME and to each XDG data dir), plus
# the glob under which this project's CI machines keep an unpacked mirror.
IMPLIED_MIRRORS_IN_HOME = (".terraform.d/plugins", ".local/share/terraform/plugins")
XDG_DATA_DIRS_DEFAULT = "/usr/local/share:/usr/share"  # the XDG Base Directory default
MIRROR_GLOBS = ("/opt/*",)
MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md")
LOCKED_ROOTS = (".", "envs/prod", "examples/minimal")
TIMEOUT_S = 600


def _roots() -> list[str]:
    """Root configurations to init and validate, relative to terraform/.

    The test harness root (`.`), every environment and every example. Validating a root
    validates each module it calls, and `terraform test` plans every module on its own, so
    modules are not validated separately (each validate loads the 700 MB provider's schema).
    """
    found = [
        str(p.parent.relative_to(TERRAFORM_DIR))
        for p in sorted(TERRAFORM_DIR.glob("*/*/versions.tf"))
        if p.parent.parent.name in ("envs", "examples")
    ]
    return [".", *found]


ROOTS = _roots()


# --- discovery -------------------------------------------------------------------------------


def _has_aws_provider(mirror: Path) -> bool:
    """A mirror (packed or unpacked layout) holds hashicorp/aws under the registry host."""
    return (mirror / AWS_PROVIDER).is_dir()


def _mirror_candidates() -> Iterator[Path]:
    """Terraform's implied local mirrors, then the CI glob, in that order."""
    home = Path.home()
    yield from (home / rel for rel in IMPLIED_MIRRORS_IN_HOME)
    xdg_data_home = os.environ.get("XDG_DATA_HOME")
    if xdg_data_home:
        yield Path(xdg_data_home, "terraform", "plugins")
    xdg_dirs = os.environ.get("XDG_DATA_DIRS") or XDG_DATA_DIRS_DEFAULT
    yield from (Path(d, "terraform", "plugins") for d in xdg_dirs.split(os.pathsep) if d)
    for pattern in MIRROR_GLOBS:
        base = Path(pattern).parent
        yield from sorted(base.glob(Path(pattern).name))


def find_provider_mirror() -> Path | None:
    """The first directory that holds hashicorp/aws in mirror layout, or None."""
    explicit = os.environ.get(PLUGIN_DIR_VARIABLE)
    if explicit:
        path = Path(explicit)
        return path if _has_aws_provider(path) else None
    for candidate in _mirror_candidates():
        if _has_aws_provider(candidate):
            return candidate
    return None


def find_checkov() -> str | None:
    """checkov from TACET_CHECKOV (a path) or PATH; it lives outside the project's venv."""
    explicit = os.environ.get(CHECKOV_VARIABLE)
    if explicit:
        if not Path(explicit).is_file():
            pytest.fail(f"{CHECKOV_VARIABLE}={explicit} is not a file")
        return explicit
    beside_python = Path(sys.executable).parent / "checkov"
    return shutil.which("checkov") or (str(beside_python) if beside_python.is_file() else None)


# --- workspace -------------------------------------------------------------------------------


Validated = dict[str, tuple[subprocess.CompletedProcess[str], ...]]
"""init (and, when it succeeded, validate) results of each root."""


@dataclass(frozen=True)
class Workspace:
    """A throwaway copy of terraform/ and infra/ with an offline Terraform environment."""

    terraform_bin: str
    root: Path  # the copy of terraform/
    env: dict[str, str]

    def run(
        self, args: list[str], where: str = ".", timeout: int = TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run terraform in a directory of the copy; output is kept for assertion messages."""
        return subprocess.run(
            [self.terraform_bin, *args],
            cwd=self.root / where,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _offline_env(cli_config: Path) -> dict[str, str]:
    """Environment that makes Terraform use the mirror only and never call home or AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(cli_config),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        AWS_EC2_METADATA_DISABLED="true",
        NO_COLOR="1",
    )
    return env


def _write_cli_config(path: Path, mirror: Path) -> None:
    """A CLI config whose only installation method is the filesystem mirror."""
    path.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f"    path    = {json.dumps(str(mirror))}\n"
        '    include = ["registry.terraform.io/hashicorp/*"]\n'
        "  }\n"
        "}\n"
    )


@pytest.fixture(scope="session")
def terraform_bin() -> str:
    found = shutil.which("terraform")
    if found is None:
        pytest.skip(
            "terraform is not installed: install Terraform >= 1.11 to run the Terraform gate"
        )
    return found


@pytest.fixture(scope="session")
def workspace(terraform_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    mirror = find_provider_mirror()
    if mirror is None:
        pytest.fail(
            "terraform is installed but no local provider mirror holding hashicorp/aws was found; "
            f"set {PLUGIN_DIR_VARIABLE} to a directory containing {AWS_PROVIDER}"
        )
    base = tmp_path_factory.mktemp("tf")
    ignore = shutil.ignore_patterns(".terraform", "*.tfstate", "*.tfstate.*", "*.tfplan")
    shutil.copytree(TERRAFORM_DIR, base / "terraform", ignore=ignore)
    shutil.copytree(REPO / "infra", base / "infra", ignore=ignore)
    cli_config = base / "offline.tfrc"
    _write_cli_config(cli_config, mirror)
    return Workspace(terraform_bin, base / "terraform", _offline_env(cli_config))


@dataclass(frozen=True)
class Gate:
    """Results of the Terraform commands that share the workspace, run concurrently."""

    validated: Validated
    test: subprocess.CompletedProcess[str] | None  # None when the harness root failed init


@pytest.fixture(scope="session")
def gate(workspace: Workspace) -> Gate:
    """init + validate of every root and `terraform test`, overlapped to use both cores.

    `terraform test` runs from the harness root as soon as that root is initialised, while
    the other roots validate (each validate loads the 700 MB provider's schema).
    """

    def init_and_validate(root: str) -> tuple[subprocess.CompletedProcess[str], ...]:
        init = workspace.run(["init", "-input=false", "-backend=false", "-no-color"], root)
        if init.returncode != 0:
            return (init,)
        return init, workspace.run(["validate", "-no-color"], root)

    with ThreadPoolExecutor(max_workers=3) as pool:
        harness_init = workspace.run(["init", "-input=false", "-backend=false", "-no-color"])
        test = (
            pool.submit(workspace.run, ["test", "-no-color"])
            if harness_init.returncode == 0
            else None
        )
        others = {root: pool.submit(init_and_validate, root) for root in ROOTS if root != "."}
        harness = (harness_init,)
        if harness_init.returncode == 0:
            harness = (harness_init, workspace.run(["validate", "-no-color"]))
        validated = {".": harness, **{root: f.result() for root, f in others.items()}}
        return Gate(validated, test.result() if test else None)


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"$ terraform {' '.join(result.args[1:])}\n{result.stdout}\n{result.stderr}"


# --- tests -----------------------------------------------------------------------------------


def test_fmt_check(terraform_bin: str) -> None:
    """Every .tf and .tftest.hcl file is in canonical format (fmt -check only reads)."""
    result = subprocess.run(
        [terraform_bin, "fmt", "-check", "-recursive", "-diff", "-no-color", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
    )
    assert result.returncode == 0, _explain(result)


@pytest.mark.parametrize("root", ROOTS)
def test_init_and_validate(root: str, gate: Gate) -> None:
    """Each root initialises offline and is valid, with every module it calls."""
    results = gate.validated[root]
    for result in results:
        assert result.returncode == 0, _explain(result)
    assert len(results) == 2 and "Success!" in results[1].stdout


def test_lock_files_are_committed_and_stable(workspace: Workspace, gate: Gate) -> None:
    """Deployable roots commit their lock file, and an offline init leaves it byte-identical."""
    for root in LOCKED_ROOTS:
        committed = TERRAFORM_DIR / root / ".terraform.lock.hcl"
        assert committed.is_file(), f"{root} must commit .terraform.lock.hcl"
        after_init = (workspace.root / root / ".terraform.lock.hcl").read_text()
        assert after_init == committed.read_text(), (
            f"terraform init rewrote {root}/.terraform.lock.hcl"
        )


def test_module_layout() -> None:
    """Every module has main/variables/outputs/versions.tf and a README."""
    modules = sorted(p for p in (TERRAFORM_DIR / "modules").iterdir() if p.is_dir())
    assert {m.name for m in modules} >= {
        "network",
        "kms",
        "audit_store",
        "queue",
        "database",
        "gateway",
        "iam",
    }
    for module in modules:
        missing = [f for f in MODULE_FILES if not (module / f).is_file()]
        assert not missing, f"modules/{module.name} lacks {missing}"


def test_every_module_is_validated_and_tested() -> None:
    """Each module is called by envs/prod (so validated) and planned alone by a .tftest.hcl."""
    prod = (TERRAFORM_DIR / "envs" / "prod" / "main.tf").read_text()
    tests = "".join(p.read_text() for p in (TERRAFORM_DIR / "tests").glob("*.tftest.hcl"))
    for module in sorted(p.name for p in (TERRAFORM_DIR / "modules").iterdir() if p.is_dir()):
        assert f'source = "../../modules/{module}"' in prod, f"envs/prod does not call {module}"
        assert f'source = "./modules/{module}"' in tests, f"no terraform test plans {module}"


def test_terraform_test_suite(gate: Gate) -> None:
    """terraform/tests/*.tftest.hcl pass against the mocked provider."""
    result = gate.test
    assert result is not None, _explain(gate.validated["."][0])
    assert result.returncode == 0, _explain(result)
    summary = re.search(r"Success! (\d+) passed, 0 failed", result.stdout)
    assert summary, _explain(result)
    files = sorted(p.name for p in (TERRAFORM_DIR / "tests").glob("*.tftest.hcl"))
    for name in files:
        assert f"tests/{name}... pass" in result.stdout, f"{name} did not pass:\n{result.stdout}"


def test_prod_plan_outside_the_us_names_the_allowed_regions(workspace: Workspace) -> None:
    """A real `terraform plan` of envs/prod in eu-west-1 fails before touching AWS.

    The error must name the allowed US regions, so the operator knows what to choose instead.
    """
    plan_dir = workspace.root / "envs" / "plan-check"
    shutil.copytree(
        workspace.root / "envs" / "prod", plan_dir, ignore=shutil.ignore_patterns(".terraform")
    )
    # Local state instead of the S3 backend; the override file is Terraform's own mechanism.
    (plan_dir / "backend_override.tf").write_text('terraform {\n  backend "local" {}\n}\n')
    init = workspace.run(["init", "-input=false", "-no-color"], "envs/plan-check")
    assert init.returncode == 0, _explain(init)
    variables = {
        "region": "eu-west-1",
        "allowed_account_ids": '["111122223333"]',
        "ami_id": "ami-0123456789abcdef0",
        "tacet_version": "0.1.0",
        "weights_s3_uri": "s3://tacet-weights/llada-8b",
    }
    args = ["plan", "-input=false", "-no-color", "-lock=false"]
    for name, value in variables.items():
        args += ["-var", f"{name}={value}"]
    plan = workspace.run(args, "envs/plan-check", timeout=300)
    output = " ".join((plan.stdout + plan.stderr).split())
    assert plan.returncode != 0, _explain(plan)
    assert 'var.region is "eu-west-1"' in output, _explain(plan)
    assert "allowed US regions: " + ", ".join(US_REGIONS) in output, _explain(plan)


def _tfdocs() -> ModuleType:
    """Import terraform/tools/tfdocs.py (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("tfdocs", TERRAFORM_DIR / "tools" / "tfdocs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_the_code() -> None:
    """Every README's inputs/outputs tables equal what tfdocs renders from the .tf files."""
    problems = _tfdocs().stale_readmes(TERRAFORM_DIR)
    assert problems == [], "\n".join([*problems, "fix: python terraform/tools/tfdocs.py --write"])


def test_readme_check_catches_drift(tmp_path: Path) -> None:
    """The sync check fails when a variable is added without regenerating the README."""
    tfdocs = _tfdocs()
    module = tmp_path / "modules" / "demo"
    module.mkdir(parents=True)
    (module / "variables.tf").write_text(
        'variable "size" {\n  description = "How many."\n'
        "  type        = number\n  default     = 2\n}\n"
    )
    (module / "outputs.tf").write_text(
        'output "id" {\n  description = "The id."\n  value       = 1\n}\n'
    )
    (module / "main.tf").write_text("")
    assert tfdocs.stale_readmes(tmp_path) == ["modules/demo: README.md is missing"]
    tfdocs.write(tmp_path)
    assert tfdocs.stale_readmes(tmp_path) == []
    assert "| `size` | How many. | `number` | `2` |" in (module / "README.md").read_text()
    with (module / "variables.tf").open("a") as f:
        f.write('\nvariable "name" {\n  description = "Who."\n  type        = string\n}\n')
    assert tfdocs.stale_readmes(tmp_path) == [
        "modules/demo: README.md inputs/outputs tables are stale"
    ]


def test_checkov_skips_are_justified() -> None:
    """Each inline checkov skip carries a reason beside it; no blanket skip list exists."""
    skip = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")
    found = 0
    for tf in TERRAFORM_DIR.rglob("*.tf"):
        for number, line in enumerate(tf.read_text().splitlines(), 1):
            match = skip.search(line)
            if match:
                found += 1
                reason = (match.group(2) or "").strip()
                assert len(reason) >= 30, (
                    f"{tf.relative_to(REPO)}:{number}: {match.group(1)} needs a reason"
                )
    assert found > 0
    for config in (".checkov.yaml", ".checkov.yml"):
        assert not (TERRAFORM_DIR / config).exists(), "skip checks inline, beside the resource"


def test_checkov_finds_no_failed_check(tmp_path: Path) -> None:
    """checkov --skip-download: no failed check, no parsing error, every skip with a comment."""
    checkov = find_checkov()
    if checkov is None:
        pytest.skip(
            "checkov is not installed (pip install checkov in its own virtualenv, "
            f"then put it on PATH or set {CHECKOV_VARIABLE})"
        )
    result = subprocess.run(
        [
            checkov,
            "-d",
            str(TERRAFORM_DIR),
            "--framework",
            "terraform",
            "--skip-download",
            "-o",
            "json",
        ],
        cwd=tmp_path,  # checkov only reads the tree; anything it writes lands here
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        env={**os.environ, "LOG_LEVEL": "ERROR"},
    )
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} {c['file_path']}"
        for c in report["results"]["failed_checks"]
    ]
    assert summary["failed"] == 0, "\n".join(failed)
    assert summary["parsing_errors"] == 0, result.stderr
    assert summary["passed"] > 100, summary
    for check in report["results"]["skipped_checks"]:
        assert check["check_result"].get("suppress_comment"), (
            f"{check['check_id']} skipped without a reason"
        )
    assert result.returncode == 0, result.stderr
