package main

import "github.com/edgepbx/edgepbx/firmware/admin"

// promptLibrary is the media engine's prompt library for the admin's
// uploads; nil when the media engine is off.
func (d *daemon) promptLibrary() admin.Prompts {
	if d.media == nil || d.media.prompts == nil {
		return nil
	}
	return d.media.prompts
}
