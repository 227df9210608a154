"""zoo/olah_serve.py (issue 26.2): only olah's 401 for a path of a repo the mirror holds becomes the Hub's 404;
the olah round trip with AutoTokenizer.from_pretrained(repo_id) online is in test_hub.py."""

from zoo.olah_serve import missing_entry


def test_only_an_absent_path_of_a_mirrored_repo_becomes_404(tmp_path):
    (tmp_path / "models" / "org" / "m" / ".git").mkdir(parents=True)
    tree = "/api/models/org/m/tree/main/additional_chat_templates"
    assert missing_entry(tree, 401, "RepoNotFound", tmp_path)
    assert missing_entry("/org/m/resolve/main/added_tokens.json", 401, "RepoNotFound", tmp_path)
    assert not missing_entry("/api/models/org/gone/tree/main/x", 401, "RepoNotFound", tmp_path), "a missing repo stays missing"
    assert not missing_entry("/api/models/org/m/revision/main", 401, "RepoNotFound", tmp_path), "repo-level requests are untouched"
    assert not missing_entry(tree, 200, None, tmp_path) and not missing_entry(tree, 401, "GatedRepo", tmp_path)
