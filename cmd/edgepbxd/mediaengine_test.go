package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
)

// TestMediaEngineWired: edgepbxd opens the recording store under /data
// with the media key, runs its retention service, and a recording made
// through it reads back only under that key.
func TestMediaEngineWired(t *testing.T) {
	dir := t.TempDir()
	d, err := newDaemon(config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	found := false
	for _, s := range d.services() {
		found = found || s.name == "recordings"
	}
	if !found {
		t.Error("no recordings retention service")
	}
	u := d.media.recordings.Usage()
	if u.Limit <= 0 || u.Full {
		t.Fatalf("usage %+v", u)
	}
	f, err := d.media.recordings.Create("voicemail", recording.Meta{Codec: "PCMU", SampleRate: 8000})
	if err != nil {
		t.Fatal(err)
	}
	audio := bytes.Repeat([]byte{0xd5}, 16000)
	f.Write(audio)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(filepath.Join(dir, "recordings", f.ID())) != filepath.Join(dir, "recordings", "voicemail") {
		t.Errorf("stored as %s", f.ID())
	}
	r, err := d.media.recordings.Open(f.ID())
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, audio) {
		t.Fatalf("read back %d bytes: %v", len(got), err)
	}
	// The store's key is not the device key itself.
	devKeys, _ := recording.StaticKey(d.id.DeviceKey)
	other, err := recording.OpenStore(recording.Config{Dir: filepath.Join(dir, "recordings"), Keys: devKeys, Quota: 1 << 30, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(f.ID()); !errors.Is(err, recording.ErrKey) {
		t.Errorf("opened under the device key: %v", err)
	}
	if _, err := d.media.prompts.Get("en", "enter-pin", 8000); err != nil {
		t.Errorf("prompt library: %v", err)
	}
}

func TestMediaKeys(t *testing.T) {
	media := bytes.Repeat([]byte{7}, 32)
	dev := bytes.Repeat([]byte{9}, 32)
	k, own, err := mediaKeys(bootstrap{DeviceKey: dev, MediaKey: media})
	if err != nil || !own {
		t.Fatal(own, err)
	}
	want, _ := recording.StaticKey(media)
	id, _, _ := k.Current()
	wid, _, _ := want.Current()
	if id != wid {
		t.Error("the handed-over media key is not the one used")
	}
	k2, own, err := mediaKeys(bootstrap{DeviceKey: dev})
	if err != nil || own {
		t.Fatal(own, err)
	}
	id2, _, _ := k2.Current()
	devKeys, _ := recording.StaticKey(dev)
	did, _, _ := devKeys.Current()
	if id2 == wid || id2 == did {
		t.Error("the fallback key is the media key or the device key itself")
	}
}
