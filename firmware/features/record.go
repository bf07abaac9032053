package features

// Code returns the code of action a in the table in force (the call
// recorder asks for RecordToggle's, which is typed during a call, not
// dialled).
func (e *Engine) Code(a Action) (string, bool) { return e.codeFor(a) }
