"""Provenance: the one header every generated table opens with (zoo.provenance.header), and the code state a run records."""

from zoo import bench, provenance


def prov(command: str, date: str, sha: str, dirty: bool = False) -> dict:
    return {"command": command, "date": date, "git": {"sha": sha, "dirty": dirty},
            "libraries": {"torch": "2.13.0+cpu"}, "machine": {"device": "cpu", "cpu_count": 2}}


def test_each_command_and_commit_is_named_once_in_the_rows_order():
    rows = [prov("zoo matrix ner --profile cpu", "2026-12-02T10:00:00+00:00", "e13c63d6f5aa"),
            prov("cli.py matrix ner --profile cpu", "2026-11-30T09:00:00+00:00", "0e407fe97caa", dirty=True),
            prov("zoo matrix ner --profile cpu", "2026-12-01T08:00:00+00:00", "e13c63d6f5aa")]
    assert provenance.header("Produced by", rows, " (matrix profile `cpu`)") == (
        "Produced by `zoo matrix ner --profile cpu` and `cli.py matrix ner --profile cpu` (matrix profile `cpu`) on cpu, 2 CPU cores, "
        "torch 2.13.0+cpu, 2026-11-30 to 2026-12-02; git e13c63d6f5, 0e407fe97c (with uncommitted changes).")


def test_one_day_is_one_date_and_minutes_are_utc():
    row = prov("zoo reproduce --org o --family squad", "2026-12-04T07:17:30+00:00", "abc")
    assert provenance.header("Re-derived by", [row]).endswith("torch 2.13.0+cpu, 2026-12-04; git abc.")
    assert provenance.header("Timed by", [row], details=("1 thread(s)",), minutes=True).endswith("1 thread(s), 2026-12-04 07:17 UTC; git abc.")


def test_the_speed_table_says_who_timed_the_cells_and_who_wrote_the_table():
    measured = [prov("zoo bench cells squad", f"2026-12-02T07:{m}:00+00:00", "ef7dac661bxx") for m in (17, 19)]
    cpu = {"model_name": "AMD EPYC", "logical_cpus": 2, "isa_flags": ["avx2", "avx512f"]}
    record = {"settings": {"threads": [1], "engine": "torch", "cpu": cpu},
              "provenance": prov("zoo bench cells squad --reuse", "2026-12-03T01:00:00+00:00", "ef7dac661bxx", True)}
    text = bench.speed_markdown([{"cell": "c", "flops_ratio": 1.0, "speedup_over_flops_ratio_s128": 1.0, "speedup_over_flops_ratio_s384": 1.0}],
                                record, measured)
    assert text.startswith("Timed by `zoo bench cells squad` on cpu, 2 CPU cores, torch 2.13.0+cpu, engine torch, 1 thread(s), "
                           "CPU AMD EPYC (2 logical, avx2 avx512f), 2026-12-02 07:17 to "
                           "2026-12-02 07:19 UTC; git ef7dac661b. Table written by `zoo bench cells squad --reuse` on cpu, 2 CPU cores, "
                           "torch 2.13.0+cpu, 2026-12-03; git ef7dac661b (with uncommitted changes). Speedup = ")


def test_only_code_changes_make_a_run_dirty(tmp_path, monkeypatch):
    import subprocess

    from zoo import paths, provenance

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "bench.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    monkeypatch.setattr(paths, "CODE_ROOT", tmp_path)
    (tmp_path / "results" / "bench.json").write_text('{"variant": 1}\n')  # a benchmark rewriting its own output
    assert provenance.git_state()["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_state()["dirty"] is True
