package moh

import (
	"fmt"
	"io"
	"os"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
)

// What backups need (firmware/backup carries the uploaded classes and
// gives them back on restore through the same parser as an upload).

// Uploaded lists the names of the uploaded classes, sorted.
func (l *Library) Uploaded() ([]string, error) {
	cs, err := l.Classes()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range cs {
		if c.Uploaded {
			out = append(out, c.Name)
		}
	}
	return out, nil
}

// File is an uploaded class's stored file (16 kHz mono 16-bit WAV),
// bounded like an upload.
func (l *Library) File(class string) ([]byte, error) {
	p, err := l.path(class)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%w: %q", ErrNoClass, class)
		}
		return nil, fmt.Errorf("moh: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("moh: %w", err)
	}
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("%w: class %q larger than %d bytes", wav.ErrRefused, class, MaxBytes)
	}
	return b, nil
}

// Check reports whether Put would accept file as class; nothing changes.
func (l *Library) Check(class string, file []byte) error {
	if _, err := l.path(class); err != nil {
		return err
	}
	pcm, _, err := wav.Parse(file, wav.Options{Rate: Rate, MaxBytes: MaxBytes, MaxAudio: MaxDuration})
	if err != nil {
		return err
	}
	if len(pcm) < FrameSamples(Rate) {
		return fmt.Errorf("%w: shorter than 20 ms", wav.ErrRefused)
	}
	return nil
}

// PutFile is Put for a restore.
func (l *Library) PutFile(class string, file []byte) error {
	_, err := l.Put(class, file)
	return err
}
