package privacy

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"
)

// TestDeletedBytesGone: thousands of call records spread over many pages,
// forgotten and swept: their bytes are nowhere in the file afterwards
// (bbolt alone leaves them in freed pages until reused), and the store
// still opens and reads.
func TestDeletedBytesGone(t *testing.T) {
	b := newBox(t, false, nil)
	for i := range 3000 {
		to := "+4930999888777"
		if i%2 == 0 {
			to = "+4930999666555"
		}
		b.call(t, fmt.Sprintf("p%05d", i), "301", to)
		b.clk.Advance(time.Second)
	}
	b.call(t, "keep", "302", "+4930111222")
	if _, err := b.reg.Forget("root1", "", Subject{Kind: Number, Value: "+4930999888777"}); err != nil {
		t.Fatal(err)
	}
	// Retention: the rest of the old calls go by age.
	if err := b.reg.Set("root1", "", "cdrs", Policy{Days: 1}); err != nil {
		t.Fatal(err)
	}
	b.clk.Advance(2 * day)
	b.call(t, "keep2", "302", "+4930111333")
	b.reg.Sweep(b.clk.Now())
	if l, _ := b.cdr.Subject("302"); len(l) != 1 {
		t.Fatalf("kept records: %+v", l)
	}
	raw, err := os.ReadFile(b.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"+4930999888777", "+4930999666555"} {
		if n := bytes.Count(raw, []byte(gone)); n != 0 {
			t.Errorf("%s still %d times in the file's bytes", gone, n)
		}
	}
	if !bytes.Contains(raw, []byte("+4930111333")) {
		t.Error("the kept record is not in the file: scrub zeroed a live page")
	}
}
