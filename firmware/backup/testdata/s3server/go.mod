// Builds the S3 server the remote-target tests upload to (versitygw, posix
// backend): a real S3 implementation, used by tests only, never linked into
// the firmware.
module s3server

go 1.26.8

require github.com/versity/versitygw v1.8.0 // indirect
