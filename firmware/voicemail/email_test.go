package voicemail

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mailer"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
)

// jobLog keeps what the service queues and the Maker it registers, so the
// test can build each job's mail as the mailer would when it sends.
type jobLog struct {
	jobs   []mailer.Job
	makers map[string]mailer.Maker
}

func (l *jobLog) Enqueue(j mailer.Job) bool { l.jobs = append(l.jobs, j); return true }
func (l *jobLog) Handle(kind string, m mailer.Maker) {
	if l.makers == nil {
		l.makers = map[string]mailer.Maker{}
	}
	l.makers[kind] = m
}

func (l *jobLog) make(t *testing.T, i int) (mailer.Message, error) {
	j := l.jobs[i]
	m := l.makers[j.Kind]
	if m == nil {
		t.Fatalf("job %+v: no maker registered for its kind", j)
	}
	return m(t.Context(), j.Ref)
}

// TestEmail: a new message of a mailbox with an address queues one job
// (none without an address); the job builds the WAV or the notice from
// what is stored when it runs, a caller name with header characters is
// made harmless, and a message deleted meanwhile is mailer.ErrGone.
func TestEmail(t *testing.T) {
	s, clk := newTestService(t, nil)
	jobs := &jobLog{}
	cfg := s.cfg
	cfg.Mail = jobs
	s, err := New(cfg) // registers its Maker
	if err != nil {
		t.Fatal(err)
	}
	deposit := func(caller string) Message {
		id, _ := newID(clk.now())
		w, err := s.cfg.Audio.Create("test", 8000)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(tone(8000, 8000, 440)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		m := Message{ID: id, Ext: "202", Caller: caller, Time: clk.now(), Duration: time.Second, New: true, Rate: 8000, File: w.ID()}
		if err := s.add(m); err != nil {
			t.Fatal(err)
		}
		clk.add(time.Minute)
		return m
	}
	deposit("201")
	if len(jobs.jobs) != 0 {
		t.Fatal("a mailbox without an address queued mail")
	}
	if err := s.SetOptions("202", Options{Email: "owner@example.test", AttachAudio: true}); err != nil {
		t.Fatal(err)
	}
	m := deposit("evil\r\nBcc: x@y")
	if len(jobs.jobs) != 1 {
		t.Fatalf("%d jobs", len(jobs.jobs))
	}
	msg, err := jobs.make(t, 0)
	if err != nil {
		t.Fatal(err)
	}
	if msg.To != "owner@example.test" || !strings.HasPrefix(msg.Subject, "Voicemail for 202 from evilBccx@y") || msg.Attached == nil {
		t.Fatalf("mail %+v", msg)
	}
	if _, err := mailer.Build("pbx@example.test", msg, clk.now()); err != nil {
		t.Fatalf("the voicemail mail does not build: %v", err)
	}
	pcm, info, err := wav.Parse(msg.Attached.Data, wav.Options{Rate: 8000})
	_, want, _ := s.Audio("202", m.ID)
	if err != nil || info.SampleRate != 8000 || len(pcm) != len(want) {
		t.Fatalf("attachment: %d samples %+v %v, want %d", len(pcm), info, err, len(want))
	}
	// Notice only, chosen after the message came: the job reads the
	// options when it runs.
	if err := s.SetOptions("202", Options{Email: "owner@example.test"}); err != nil {
		t.Fatal(err)
	}
	if msg, err := jobs.make(t, 0); err != nil || msg.Attached != nil {
		t.Fatalf("notice: %+v %v", msg, err)
	}
	if j := jobs.jobs[0]; j.Kind != "voicemail" || j.Ref != "202/"+m.ID {
		t.Fatalf("job %+v names more or less than the message", j)
	}
	for _, ref := range []string{"", "202", "../202/" + m.ID, "2x2/" + m.ID, "202/nope"} {
		if _, err := jobs.makers["voicemail"](t.Context(), ref); !errors.Is(err, mailer.ErrGone) {
			t.Errorf("reference %q: %v, want ErrGone", ref, err)
		}
	}
	if err := s.Delete("202", m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.make(t, 0); !errors.Is(err, mailer.ErrGone) {
		t.Fatalf("deleted message: %v", err)
	}
}
