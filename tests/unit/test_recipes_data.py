"""The demo model's data recipe (issue 11): parsing, join, split, held-out guard, taxonomies,
baseline. Everything runs on small samples written here; nothing is downloaded."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from recipes import baseline, taxonomies
from recipes.dataset import Package, read_jsonl, write_jsonl
from recipes.deb822 import iter_stanzas, long_description, parse_tag_field
from recipes.debian_data import (
    VOCABULARY_FILE,
    JoinStats,
    index_translations,
    join_packages,
    strip_component,
    write_dataset,
)
from recipes.errors import DatasetError, HeldOutAccessError, TaxonomyError, VocabularyError
from recipes.split import (
    SPLIT_FILES,
    Split,
    bucket,
    load_held_out_for_final_report,
    load_split,
    load_training_data,
    split_of,
)

REPO = Path(__file__).resolve().parents[2]

PACKAGES = """\
Package: alpha-tool
Version: 1.0-1
Architecture: amd64
Description: Tool that does alpha things
Description-md5: 11111111111111111111111111111111
Tag: interface::commandline, role::program,
 use::converting
Section: utils

Package: beta-game
Version: 2.0-1
Description: A beta game
Description-md5: 22222222222222222222222222222222
Section: contrib/games

Package: gamma-doc
Version: 1.0-1
Description: A beta game
Description-md5: 22222222222222222222222222222222
Section: doc

Package: orphan
Version: 1.0
Description: No translation for me
Description-md5: 99999999999999999999999999999999
Section: misc

Package: terse
Version: 1.0
Description: Only a synopsis
Description-md5: 33333333333333333333333333333333
Section: misc

Package: alpha-tool
Version: 1.0-1+deb12u1
Description: Tool that does alpha things
Description-md5: 44444444444444444444444444444444
Tag: interface::commandline, role::program
Section: admin
"""

TRANSLATIONS = """\
Package: alpha-tool
Description-md5: 11111111111111111111111111111111
Description-en: Tool that does alpha things
 Alpha reads files
 and writes them.
 .
 Features:
   * fast
   * small
 .
 Last paragraph.

Package: beta-game
Description-md5: 22222222222222222222222222222222
Description-en: A beta game
 Beta is a game about bees.

Package: terse
Description-md5: 33333333333333333333333333333333
Description-en: Only a synopsis

Package: alpha-tool
Description-md5: 44444444444444444444444444444444
Description-en: Tool that does alpha things
 Alpha, security update.
"""

VOCABULARY = """\
Facet: interface
Description: User Interface
 What kind of user interface the package provides

Tag: interface::commandline
Description: Command Line

Tag: interface::x11
Description: X Window System
 Graphical programs for X.

Facet: role
Status: draft
Description: Role

Tag: role::program
Description: Program

Facet: special
Description: Service tags

Tag: special::unused
Description: Never used
"""


def _join(packages: str = PACKAGES, translations: str = TRANSLATIONS) -> tuple[list, JoinStats]:
    table = index_translations(iter_stanzas(translations.splitlines(keepends=True)))
    stats = JoinStats()
    rows = join_packages(iter_stanzas(packages.splitlines(keepends=True)), table, stats)
    return rows, stats


# --- parsing and join -------------------------------------------------------------------------


def test_stanzas_keep_continuation_lines() -> None:
    stanzas = list(iter_stanzas(PACKAGES.splitlines(keepends=True)))
    assert len(stanzas) == 6
    assert stanzas[0]["Tag"] == "interface::commandline, role::program,\n use::converting"
    assert stanzas[1]["Section"] == "contrib/games"


def test_long_description_drops_paragraph_markers_and_keeps_lists() -> None:
    desc = TRANSLATIONS.split("Description-en: ", 1)[1].split("\n\n", 1)[0]
    text = long_description(desc)
    assert text == "Alpha reads files and writes them.\nFeatures:\n* fast\n* small\nLast paragraph."
    assert " ." not in text and "\n.\n" not in text


def test_tag_field_is_split_sorted_and_deduplicated() -> None:
    assert parse_tag_field("b::y, a::x,\n b::y, junk") == ["a::x", "b::y"]
    assert parse_tag_field("") == []


def test_strip_component() -> None:
    assert strip_component("contrib/games") == ("contrib", "games")
    assert strip_component("non-free/science") == ("non-free", "science")
    assert strip_component("utils") == ("main", "utils")


def test_join_packages_with_translations() -> None:
    rows, stats = _join()
    by_name = {row.name: row for row in rows}
    assert [row.name for row in rows] == ["alpha-tool", "beta-game", "gamma-doc"]
    # The later stanza (security update) wins for a name listed twice.
    assert by_name["alpha-tool"].section == "admin"
    assert by_name["alpha-tool"].text == "Alpha, security update."
    assert by_name["alpha-tool"].tags == ("interface::commandline", "role::program")
    # Component prefix dropped; translation shared by md5 with another package.
    assert by_name["beta-game"].section == "games"
    assert by_name["gamma-doc"].text == "Beta is a game about bees."
    # The md5 covers synopsis and long part, so the synopsis comes from the translation too.
    assert by_name["gamma-doc"].summary == "A beta game"
    assert by_name["beta-game"].tags == ()
    assert stats.no_translation == 1  # orphan
    assert stats.empty_long_description == 1  # terse
    assert stats.duplicates == 1
    assert stats.components == {"main": 2, "contrib": 1}


def test_join_uses_a_long_description_in_the_packages_list_itself() -> None:
    packages = "Package: solo\nDescription: Solo\n Long text here.\nSection: misc\n"
    rows, _ = _join(packages, "")
    assert rows == [Package("solo", "Long text here.", "Solo", "misc", ())]


def test_index_files_are_read_through_their_compression(tmp_path: Path) -> None:
    from recipes.apt import read_index_lines

    path = tmp_path / "example_Packages.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(PACKAGES)
    names = [s["Package"] for s in iter_stanzas(read_index_lines(path))]
    assert names == ["alpha-tool", "beta-game", "gamma-doc", "orphan", "terse", "alpha-tool"]


def test_index_files_are_read_without_apt_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lzma

    from recipes import apt

    monkeypatch.setattr(apt, "_apt_helper", lambda: None)
    plain, packed = tmp_path / "Packages", tmp_path / "Packages.xz"
    plain.write_text(PACKAGES, encoding="utf-8")
    with lzma.open(packed, "wt", encoding="utf-8") as out:
        out.write(PACKAGES)
    assert list(apt.read_index_lines(plain)) == list(apt.read_index_lines(packed))
    assert sum(1 for s in iter_stanzas(apt.read_index_lines(packed))) == 6


def test_malformed_dataset_row_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"name": "x", "text": "t"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="lacks field"):
        list(read_jsonl(path))
    path.write_text("not json\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="line 1"):
        list(read_jsonl(path))


# --- split and the held-out guard -------------------------------------------------------------


def test_bucket_is_the_first_hex_digit_of_sha256() -> None:
    # Checked against `printf %s NAME | sha256sum`.
    assert [bucket(n) for n in ("vim", "0ad", "make", "libc6")] == ["0", "c", "d", "f"]
    assert split_of("0ad") is Split.TRAIN
    assert split_of("make") is Split.VALIDATION
    assert split_of("libc6") is Split.HELD_OUT


def test_split_proportions_follow_the_buckets() -> None:
    names = [f"pkg-{i}" for i in range(16000)]
    counts = {split: 0 for split in Split}
    for name in names:
        counts[split_of(name)] += 1
    assert abs(counts[Split.TRAIN] / 16000 - 13 / 16) < 0.02
    assert abs(counts[Split.VALIDATION] / 16000 - 1 / 16) < 0.01
    assert abs(counts[Split.HELD_OUT] / 16000 - 2 / 16) < 0.01


def _names(split: Split, n: int, prefix: str = "pkg") -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        name = f"{prefix}-{i}"
        if split_of(name) is split:
            out.append(name)
        i += 1
    return out


def _row(name: str, section: str = "misc", text: str = "words", tags: tuple = ()) -> Package:
    return Package(name, text, "summary", section, tags)


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    rows = [_row(n) for split in Split for n in _names(split, 3)]
    counts = write_dataset(tmp_path, rows)
    assert counts == {"train": 3, "validation": 3, "held-out": 3}
    return tmp_path


def test_training_loader_serves_train_and_validation_only(split_dir: Path) -> None:
    train, validation = load_training_data(split_dir)
    assert {split_of(r.name) for r in train} == {Split.TRAIN}
    assert {split_of(r.name) for r in validation} == {Split.VALIDATION}
    assert len(train) == len(validation) == 3


@pytest.mark.parametrize("asked", [Split.HELD_OUT, "held-out"])
def test_training_loader_refuses_held_out(split_dir: Path, asked: Split | str) -> None:
    with pytest.raises(HeldOutAccessError):
        load_split(split_dir, asked)


def test_unknown_split_name_is_an_error(split_dir: Path) -> None:
    with pytest.raises(DatasetError):
        load_split(split_dir, "test")


def test_held_out_row_smuggled_into_train_is_refused(split_dir: Path) -> None:
    train_file = split_dir / SPLIT_FILES[Split.TRAIN]
    rows = [*read_jsonl(train_file), _row(_names(Split.HELD_OUT, 1)[0])]
    write_jsonl(train_file, rows)
    with pytest.raises(DatasetError):
        load_training_data(split_dir)


def test_final_report_reads_held_out(split_dir: Path) -> None:
    rows = load_held_out_for_final_report(split_dir)
    assert len(rows) == 3
    assert {split_of(r.name) for r in rows} == {Split.HELD_OUT}


def test_missing_dataset_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="fetch"):
        load_split(tmp_path, Split.TRAIN)


# --- taxonomies -------------------------------------------------------------------------------


def _vocabulary() -> taxonomies.Vocabulary:
    return taxonomies.parse_vocabulary(VOCABULARY.splitlines(keepends=True))


def test_vocabulary_parses_facets_and_tags() -> None:
    vocab = _vocabulary()
    assert list(vocab.facets) == ["interface", "role", "special"]
    assert vocab.tags["interface::x11"].long == "Graphical programs for X."
    assert vocab.tags["interface::commandline"].short == "Command Line"


def test_vocabulary_with_undeclared_facet_is_refused() -> None:
    lines = ["Facet: a\n", "Description: A\n", "\n", "Tag: lost::tag\n", "Description: L\n"]
    with pytest.raises(VocabularyError, match="undeclared"):
        taxonomies.parse_vocabulary(lines)


def test_debtags_taxonomy_keeps_frequent_described_tags() -> None:
    train = [_row(f"p{i}", tags=("interface::commandline", "role::program")) for i in range(3)]
    train += [_row("q", tags=("interface::x11", "privacy::tracking"))]
    report = taxonomies.BuildReport()
    doc = taxonomies.build_debtags_taxonomy(_vocabulary(), train, min_tag_count=2, report=report)
    taxonomies.validate_taxonomy(doc)
    assert doc["name"] == "debtags" and doc["version"] == "1"
    facets = {f["name"]: f for f in doc["facets"]}
    assert list(facets) == ["interface", "role"]  # `special` has no tag in train: dropped
    assert all(f["multi"] is True for f in facets.values())
    labels = facets["interface"]["labels"]
    assert [label["id"] for label in labels] == ["interface::commandline"]  # x11 too rare
    # No long description in the vocabulary: "Facet: Tag" from the short ones.
    assert labels[0] == {
        "id": "interface::commandline",
        "name": "Command Line",
        "description": "User Interface: Command Line",
    }
    assert report.rare_tags == ["interface::x11"]
    assert report.unknown_tags == ["privacy::tracking"]
    assert report.dropped_facets == ["special"]


def test_sections_taxonomy_lists_train_sections() -> None:
    train = [_row("a", "utils"), _row("b", "admin"), _row("c", "utils"), _row("d", "weird")]
    report = taxonomies.BuildReport()
    doc = taxonomies.build_sections_taxonomy(train, report)
    taxonomies.validate_taxonomy(doc)
    (facet,) = doc["facets"]
    assert facet["name"] == "section" and facet["multi"] is False
    assert [label["id"] for label in facet["labels"]] == ["admin", "utils", "weird"]
    assert facet["labels"][0]["name"] == "Administration Utilities"
    assert report.undescribed_sections == ["weird"]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.update(version=1),
        lambda d: d["facets"][0].update(multi="yes"),
        lambda d: d["facets"][0]["labels"].append(dict(d["facets"][0]["labels"][0])),
        lambda d: d["facets"][0]["labels"][0].update(name=" "),
        lambda d: d["facets"][0]["labels"][0].update(parent="nowhere"),
        lambda d: d["facets"].append(dict(d["facets"][0])),
        lambda d: d.update(facets=[]),
    ],
)
def test_validate_taxonomy_rejects_broken_documents(breakage) -> None:
    doc = taxonomies.build_sections_taxonomy([_row("a", "utils"), _row("b", "admin")])
    taxonomies.validate_taxonomy(doc)
    breakage(doc)
    with pytest.raises(TaxonomyError):
        taxonomies.validate_taxonomy(doc)


@pytest.mark.parametrize("name", ["debian-sections", "debtags"])
def test_shipped_taxonomy_files_follow_the_contract(name: str) -> None:
    doc = json.loads((REPO / "models" / "taxonomies" / f"{name}.json").read_text("utf-8"))
    taxonomies.validate_taxonomy(doc)
    assert doc["name"] == name and doc["version"] == "1"
    for facet in doc["facets"]:
        for label in facet["labels"]:
            if name == "debtags":
                assert facet["multi"] is True
                assert label["id"].startswith(facet["name"] + "::")
            else:
                assert facet["name"] == "section" and "/" not in label["id"]


# --- baseline ---------------------------------------------------------------------------------

_TOPICS = {
    "games": ("game play levels player score arcade", "game::arcade"),
    "sound": ("audio music sound mixer playback volume", "works-with::audio"),
    "science": ("molecule protein chemistry physics simulation", "field::chemistry"),
}

_BASELINE_VOCABULARY = """\
Facet: game
Description: Games

Tag: game::arcade
Description: Arcade

Facet: works-with
Description: Works with

Tag: works-with::audio
Description: Audio

Facet: field
Description: Field

Tag: field::chemistry
Description: Chemistry
"""


@pytest.fixture
def separable_dir(tmp_path: Path) -> Path:
    """Three sections with disjoint vocabularies, each tied to one tag: a linear model is exact."""
    rows: list[Package] = []
    for split, n in ((Split.TRAIN, 12), (Split.VALIDATION, 4), (Split.HELD_OUT, 2)):
        for section, (words, tag) in _TOPICS.items():
            for i, name in enumerate(_names(split, n, prefix=section)):
                text = " ".join(words.split()[i % 3 :] + words.split()[: i % 3])
                rows.append(Package(name, text, "s", section, (tag,)))
    write_dataset(tmp_path, rows)
    (tmp_path / VOCABULARY_FILE).write_text(_BASELINE_VOCABULARY, encoding="utf-8")
    return tmp_path


def test_baseline_separates_a_separable_set(separable_dir: Path) -> None:
    result = baseline.evaluate(separable_dir)
    sections, debtags = result["sections"], result["debtags"]
    assert sections["n_train"] == 36 and sections["n_validation"] == 12
    assert sections["classes"] == 3
    assert sections["accuracy"] == 1.0 and sections["macro_f1"] == 1.0
    assert debtags["tags"] == 3 and debtags["facets"] == 3
    assert debtags["micro_f1"] == 1.0
    assert set(debtags["per_facet_micro_f1"]) == {"game", "works-with", "field"}


def test_baseline_cli_prints_json(separable_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert baseline.main(["--data", str(separable_dir)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sections"]["accuracy"] == 1.0


def test_taxonomies_cli_writes_valid_files(separable_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "taxonomies"
    assert taxonomies.main(["build", "--data", str(separable_dir), "--out", str(out)]) == 0
    for name in ("debian-sections", "debtags"):
        taxonomies.validate_taxonomy(json.loads((out / f"{name}.json").read_text("utf-8")))
    sections = json.loads((out / "debian-sections.json").read_text("utf-8"))
    assert [label["id"] for label in sections["facets"][0]["labels"]] == [
        "games",
        "science",
        "sound",
    ]
