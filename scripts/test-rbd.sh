#!/usr/bin/env bash
# npm run test:rbd - the storage contract on Ceph RBD, plus the drive, clone and transfer tests of
# the service with STORAGE=rbd. Uses the cluster named by CEPH_CONF, or starts a throwaway dev
# cluster (../shared/tools/ceph-dev.sh, or CEPH_DEV) under a temporary folder and stops it after.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=${CEPH_DEV:-../shared/tools/ceph-dev.sh}
dir=
if [[ -z ${CEPH_CONF:-} ]]; then
  command -v ceph-mon >/dev/null || { echo "test:rbd: Ceph is not installed (apt-get install -y ceph-mon ceph-osd ceph-common)" >&2; exit 1; }
  dir=$(mktemp -d /tmp/clonejobs-ceph.XXXXXX)
  trap 'bash "$dev" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
  CEPH_CONF=$(CEPH_DEV_OSD_SIZE=${CEPH_DEV_OSD_SIZE:-20G} bash "$dev" start "$dir")
fi
export CEPH_CONF STORAGE=rbd RBD_POOL=${RBD_POOL:-rbd}
# tap exits non-zero on any failure; the trap still stops the cluster. The slowest file takes
# ~130 s on a loaded 2-core CI machine (storage.rbd.ts): 420 s bounds what a hang costs
npx tap --timeout=420 "$@" test/rbd/*.rbd.ts test/storage/contract.test.ts \
  test/drives/*.test.ts test/clones/drive-clone.test.ts test/clones/server-clone.test.ts \
  test/clones/concurrency.test.ts test/transfers/*.test.ts
