"""olah, answering a missing file or folder of an existing repo the way the Hub does (`zoo hub-serve`).

olah answers a path its local mirror repo lacks with 401 RepoNotFound; the Hub answers 404
EntryNotFound. transformers probes optional paths (`AutoTokenizer.from_pretrained(repo_id)` lists
the absent `additional_chat_templates/` folder) and treats 401 as "no such repo", so on a local
hub it failed where it works on the Hub. This runs olah's own server with one middleware that
turns that 401 into the Hub's 404 when the repo itself is in the mirror folder.

Run as `python -m zoo.olah_serve -c OLAH_TOML` with ZOO_HUB_DIR set to the mirrored folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# /api/models/ORG/NAME/tree/REV/PATH and /ORG/NAME/resolve/REV/FILE (a model repo's paths)
REPO_PATH = re.compile(r"^/(?:api/models/(?P<a>[^/]+/[^/]+)/tree/[^/]+/.+|(?P<b>[^/]+/[^/]+)/resolve/[^/]+/.+)$")


def missing_entry(path: str, status: int, error_code: str | None, hub_dir: Path) -> bool:
    """True for olah's 401 on a path of a repo the mirror folder has: an absent file or folder."""
    match = REPO_PATH.match(path)
    repo = match and (match["a"] or match["b"])
    return bool(status == 401 and error_code == "RepoNotFound" and repo and (hub_dir / "models" / repo / ".git").is_dir())


def main() -> None:
    from olah import server
    from starlette.responses import Response

    hub_dir = Path(os.environ["ZOO_HUB_DIR"])

    @server.app.middleware("http")
    async def entry_not_found(request, call_next):
        response = await call_next(request)
        if missing_entry(request.url.path, response.status_code, response.headers.get("x-error-code"), hub_dir):
            return Response(status_code=404, headers={"x-error-code": "EntryNotFound", "x-error-message": "Entry not found"})
        return response

    server.main()


if __name__ == "__main__":
    main()
