"""`make package`: the size of what `sam deploy` uploads for the function, after `sam build`.

`sam build` leaves the function's artifact (the `bootstrap` binary) in .aws-sam/build/<LogicalId>/; `sam deploy`
(and `sam package`) zip that folder, every file with ZIP_DEFLATED at zlib's default level, and upload the zip.
This zips it the same way into .aws-sam/<LogicalId>.zip and prints its size.

Usage: python scripts/package_size.py [--build-dir .aws-sam/build] [--function EcsRerunFunction]
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path

LAMBDA_ZIP_LIMIT = 50 * 1024 * 1024   # direct upload limit of a zipped deployment package (50 MB)


def zip_dir(source: Path, out: Path) -> int:
    """Zips every file under `source` (paths relative to it, mode 0755 as SAM sets it); the zip's size in bytes."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, _, files in os.walk(source, followlinks=True):
            for name in sorted(files):
                full = Path(root) / name
                info = zipfile.ZipInfo(str(full.relative_to(source)))
                info.create_system = 3
                info.external_attr = (0o100755 << 16)
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, full.read_bytes())
    return out.stat().st_size


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default=".aws-sam/build", type=Path)
    ap.add_argument("--function", default="EcsRerunFunction", help="the function's logical id in template.yaml")
    args = ap.parse_args(argv)
    source = args.build_dir / args.function
    bootstrap = source / "bootstrap"
    if not bootstrap.is_file():
        print(f"package: {bootstrap} is missing: run `sam build --beta-features` first (make package does)",
              file=sys.stderr)
        return 1
    out = args.build_dir.parent / f"{args.function}.zip"
    size = zip_dir(source, out)
    raw = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    print(f"package: {out} = {size} bytes ({size / 1e6:.2f} MB, {size / 2**20:.2f} MiB) zipped, as `sam deploy` "
          f"uploads it; unzipped {raw} bytes ({raw / 1e6:.2f} MB); Lambda's zip limit is 50 MB")
    return 0 if size <= LAMBDA_ZIP_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
