package admin

import (
	"encoding"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/auth"
)

// openAPI builds the OpenAPI 3.1 document from the route table, so the
// documentation cannot drift from what is served (openapi.json in this
// folder is its committed copy, checked by TestOpenAPIUpToDate).
func (s *Server) openAPI() map[string]any {
	paths := map[string]any{}
	for _, rt := range s.routes {
		if !strings.HasPrefix(rt.path, "/api/") {
			continue
		}
		op := map[string]any{"summary": rt.summary, "responses": map[string]any{
			"200": map[string]any{"description": "OK (JSON)"},
			"4XX": map[string]any{"description": "error", "content": map[string]any{"application/problem+json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Problem"}}}},
		}}
		if rt.public {
			op["security"] = []any{}
			op["x-public"] = true
		} else if rt.owner {
			op["security"] = []any{map[string]any{"mailboxOwner": []any{}}}
			op["x-mailbox-owner"] = true
		} else {
			op["x-permission"] = string(rt.perm)
			var roles []string
			for _, r := range auth.Roles {
				if auth.RoleCan(r, rt.perm) {
					roles = append(roles, string(r))
				}
			}
			op["x-roles"] = roles
		}
		if rt.req != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": schemaOf(reflect.TypeOf(rt.req))}}}
		}
		var params []any
		for _, name := range []string{"id", "name"} {
			if strings.Contains(rt.path, "{"+name+"}") {
				params = append(params, map[string]any{"name": name, "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
			}
		}
		if params != nil {
			op["parameters"] = params
		}
		item, _ := paths[rt.path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.path] = item
		}
		item[strings.ToLower(rt.method)] = op
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "edgepbx admin API", "version": "1",
			"description": "Same handlers and authorisation as the web UI. Browser sessions send the CSRF token in X-CSRF-Token on every change; API clients use Authorization: Bearer ebx_… tokens. Changes from foreign Origins are refused. Errors are RFC 9457 problem+json."},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{
				"session": map[string]any{"type": "apiKey", "in": "cookie", "name": CookieName},
				"token":   map[string]any{"type": "http", "scheme": "bearer"},
				// A mailbox owner's session (POST /api/v1/mailbox/login): the
				// /api/v1/mailbox routes only.
				"mailboxOwner": map[string]any{"type": "apiKey", "in": "cookie", "name": OwnerCookieName},
			},
			"schemas": map[string]any{"Problem": map[string]any{"type": "object", "properties": map[string]any{
				"type": map[string]any{"type": "string"}, "title": map[string]any{"type": "string"},
				"status": map[string]any{"type": "integer"}, "detail": map[string]any{"type": "string"}}}},
		},
		"security": []any{map[string]any{"session": []any{}}, map[string]any{"token": []any{}}},
	}
}

// schemaOf describes a request struct from its json tags.
func schemaOf(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// Addresses, prefixes and times are JSON strings (encoding.TextMarshaler).
	if t.Implements(reflect.TypeFor[encoding.TextMarshaler]()) {
		return map[string]any{"type": "string"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint32, reflect.Uint8:
		return map[string]any{"type": "integer"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.Struct:
		props := map[string]any{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			props[name] = schemaOf(f.Type)
		}
		return map[string]any{"type": "object", "additionalProperties": false, "properties": props}
	}
	return map[string]any{}
}

func (s *Server) openAPIJSON() []byte {
	raw, _ := json.MarshalIndent(s.openAPI(), "", "  ")
	return append(raw, '\n')
}

func (s *Server) apiOpenAPI(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(s.openAPIJSON())
	return err
}
