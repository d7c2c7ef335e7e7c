package objstore

// SetListPageSize makes an s3 store ask for n keys per ListObjectsV2 page.
func SetListPageSize(s Store, n int32) { s.(*S3Store).listPageSize = n }

var (
	IsCustomEndpoint = isCustomEndpoint
	EncodeHeader     = encodeHeader
)

const HeaderMagic = headerMagic
