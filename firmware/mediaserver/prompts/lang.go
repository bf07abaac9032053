package prompts

// ValidLanguage reports whether s can name a prompt language (en, de,
// pt-BR): the rule the library applies to its directory names.
func ValidLanguage(s string) bool { return langRE.MatchString(s) }
