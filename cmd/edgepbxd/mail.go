package main

import (
	"context"

	"github.com/edgepbx/edgepbx/firmware/mailer"
)

// newMail builds the outgoing mail service (voicemail to e-mail, the
// admin's test message): settings sealed in the store, a bounded queue
// sent by the "mail" service. Without it voicemail works, unmailed.
func (d *daemon) newMail() {
	m, err := mailer.New(mailer.Config{DB: d.db, Log: d.log})
	if err != nil {
		d.log.Error("mail: disabled", "err", err)
		return
	}
	d.mail = m
}

func (d *daemon) runMail(ctx context.Context) error {
	if d.mail == nil {
		<-ctx.Done()
		return nil
	}
	return d.mail.Run(ctx)
}
