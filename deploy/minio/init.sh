#!/bin/sh
# Run once by compose's minio-bucket service: the videos bucket, and the app's MinIO user allowed that
# bucket alone (the gateway and workers never hold MinIO's root credentials). Idempotent.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing local/hsa-videos
mc admin user add local "$APP_USER" "$APP_PASSWORD"
mc admin policy create local hsa-videos /policy/hsa-videos-policy.json
if ! mc admin user info local "$APP_USER" | grep -q "hsa-videos"; then
    mc admin policy attach local hsa-videos --user "$APP_USER"
fi
