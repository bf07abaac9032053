package provision

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/boombuler/barcode/qr"
)

// QRSVG renders text as a QR code in SVG (server-side, no script), for the
// printable enrolment card. Text is bounded: it is a URL.
func QRSVG(text string) ([]byte, error) {
	if text == "" || len(text) > 512 {
		return nil, errors.New("provision: QR text must be 1-512 bytes")
	}
	code, err := qr.Encode(text, qr.M, qr.Auto)
	if err != nil {
		return nil, fmt.Errorf("provision: QR: %w", err)
	}
	bnd := code.Bounds()
	n := bnd.Dx()
	const quiet = 4
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges">`, n+2*quiet, n+2*quiet)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#fff"/><path fill="#000" d="`)
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			if r, _, _, _ := code.At(bnd.Min.X+x, bnd.Min.Y+y).RGBA(); r == 0 {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x+quiet, y+quiet)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return b.Bytes(), nil
}
