package wire

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// EncodingZlib is the [HeaderContentEncoding] value of a body compressed
// with zlib (RFC 1950), as python-cqrs's ZlibCompressor does.
const EncodingZlib = "zlib"

// compressor compresses bodies with zlib, reusing writers.
type compressor struct {
	level   int       // 0 means zlib.DefaultCompression
	writers sync.Pool // *zlib.Writer
}

// compress returns body compressed.
func (c *compressor) compress(body []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(body)/2 + 64)
	zw, _ := c.writers.Get().(*zlib.Writer)
	if zw == nil {
		var err error
		level := c.level
		if level == 0 {
			level = zlib.DefaultCompression
		}
		if zw, err = zlib.NewWriterLevel(&buf, level); err != nil {
			return nil, err
		}
	} else {
		zw.Reset(&buf)
	}
	if _, err := zw.Write(body); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	c.writers.Put(zw)
	return buf.Bytes(), nil
}

// decompressor decompresses bodies with zlib, reusing readers, and refuses
// to produce more than a limit.
type decompressor struct {
	readers sync.Pool // io.ReadCloser implementing zlib.Resetter
}

// decompress returns data decompressed, or an error matching ErrCompression
// (corrupt, truncated or followed by trailing data) or ErrTooLarge (more
// than limit bytes once decompressed).
func (d *decompressor) decompress(data []byte, limit int) ([]byte, error) {
	src := bytes.NewReader(data)
	zr, err := d.reader(src)
	if err != nil {
		return nil, compressionError(err)
	}
	// Read at most limit+1 bytes: one more than allowed tells a body that
	// is too large from one that is exactly limit bytes long.
	out, err := readAtMost(zr, limit+1, len(data))
	if err != nil {
		return nil, compressionError(err)
	}
	if len(out) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes once decompressed", ErrTooLarge, limit)
	}
	if src.Len() > 0 {
		return nil, fmt.Errorf("%w: %d bytes of trailing data", ErrCompression, src.Len())
	}
	// Only a reader that reached the end of its stream cleanly goes back.
	d.readers.Put(zr)
	return out, nil
}

func (d *decompressor) reader(src *bytes.Reader) (io.ReadCloser, error) {
	if zr, ok := d.readers.Get().(io.ReadCloser); ok {
		if r, ok := zr.(zlib.Resetter); ok {
			if err := r.Reset(src, nil); err != nil {
				return nil, err
			}
			return zr, nil
		}
	}
	return zlib.NewReader(src)
}

// readAtMost reads r to its end, or until it has n bytes. hint sizes the
// first buffer.
func readAtMost(r io.Reader, n, hint int) ([]byte, error) {
	size := min(max(hint*4, 512), n)
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= n {
				return buf, nil
			}
			buf = append(buf, 0)[:len(buf)]
			if cap(buf) > n {
				buf = buf[:len(buf):n]
			}
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func compressionError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: truncated: %w", ErrCompression, err)
	}
	return fmt.Errorf("%w: %w", ErrCompression, err)
}

// encoding classifies a content-encoding header value: compressed reports
// whether the body is zlib, and err (matching ErrUnsupported) an unknown
// encoding.
func encoding(v string) (compressed bool, err error) {
	v = strings.TrimSpace(v)
	switch {
	case v == "" || strings.EqualFold(v, "identity"):
		return false, nil
	case strings.EqualFold(v, EncodingZlib):
		return true, nil
	default:
		return false, fmt.Errorf("%w: content encoding %s", ErrUnsupported, quote(v))
	}
}
