package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// This file turns a request body into a tree of YAML nodes: YAML through the YAML decoder,
// JSON through a JSON parser of its own that builds the same tree. jobs.go validates the tree.

// decodeDocument parses the body into a single YAML node tree. JSON gets its own parser (YAML
// does not know all of JSON's escapes) that builds the same tree, so both formats share one
// validation path, the refusal of duplicate keys included.
func decodeDocument(body []byte, isJSON bool) (*yaml.Node, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, invalidf("request body is empty: send a job document with at least name and playbook")
	}
	if !utf8.Valid(body) {
		return nil, invalidf("request body is not valid UTF-8 (first bad byte at offset %d)", firstInvalidUTF8(body))
	}
	if isJSON && hasLoneSurrogate(body) {
		// encoding/json would quietly turn it into U+FFFD; YAML refuses it, and so do we.
		return nil, invalidf("request body is not valid UTF-8: it escapes half of a UTF-16 surrogate pair (\\uD800-\\uDFFF alone)")
	}
	if isJSON {
		return jsonToNode(body)
	}
	dec := yaml.NewDecoder(bytes.NewReader(body))
	var doc yaml.Node
	if err := dec.Decode(&doc); err == io.EOF {
		return nil, invalidf("job document is empty")
	} else if err != nil {
		return nil, invalidf("job document is not valid YAML: %v", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, invalidf("request body holds more than one YAML document: send one job per request")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, invalidf("job document is empty")
	}
	return doc.Content[0], nil
}

// hasLoneSurrogate reports whether JSON text holds a \uD800-\uDFFF escape that is not half of
// a high-low pair. Backslashes appear in valid JSON only inside strings, as escapes, so
// walking the escapes is enough.
func hasLoneSurrogate(body []byte) bool {
	hex4 := func(at int) (uint64, bool) {
		if at+4 > len(body) {
			return 0, false
		}
		v, err := strconv.ParseUint(string(body[at:at+4]), 16, 32)
		return v, err == nil
	}
	for i := 0; i+1 < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		if body[i+1] != 'u' {
			i++ // skip the escaped character, which may be a backslash
			continue
		}
		v, ok := hex4(i + 2)
		switch {
		case !ok || v < 0xD800 || v > 0xDFFF:
		case v <= 0xDBFF && i+7 < len(body) && body[i+6] == '\\' && body[i+7] == 'u':
			lo, ok := hex4(i + 8)
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 6 // the pair's second half
		default:
			return true
		}
		i += 5
	}
	return false
}

// firstInvalidUTF8 returns the offset of the first byte that is not valid UTF-8.
func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// maxJSONDepth bounds the nesting of a JSON document, which jsonParser walks recursively.
const maxJSONDepth = 100

// jsonToNode parses exactly one JSON value into a YAML node tree.
func jsonToNode(body []byte) (*yaml.Node, error) {
	p := &jsonParser{dec: json.NewDecoder(bytes.NewReader(body)), body: body, line: 1}
	p.dec.UseNumber()
	node, err := p.value(0)
	if err != nil {
		return nil, invalidf("request body is not valid JSON: %v", err)
	}
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, invalidf("request body holds more than one JSON value: send one job per request")
	}
	return node, nil
}

// jsonParser builds nodes from JSON tokens, keeping count of lines for error messages.
type jsonParser struct {
	dec  *json.Decoder
	body []byte
	pos  int // offset up to which newlines are counted
	line int // the line at pos
}

// currentLine is the line of the decoder's position; offsets only grow, so counting is
// incremental.
func (p *jsonParser) currentLine() int {
	off := int(p.dec.InputOffset())
	p.line += bytes.Count(p.body[p.pos:off], []byte("\n"))
	p.pos = off
	return p.line
}

// value reads the next JSON value as a node, with the tags the YAML decoder would give it.
func (p *jsonParser) value(depth int) (*yaml.Node, error) {
	if depth > maxJSONDepth {
		return nil, fmt.Errorf("nested more than %d levels deep", maxJSONDepth)
	}
	line := p.currentLine()
	tok, err := p.dec.Token()
	if err != nil {
		return nil, err
	}
	scalar := func(tag, value string) *yaml.Node {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value, Line: line}
	}
	switch t := tok.(type) {
	case json.Delim:
		kind, tag := yaml.MappingNode, "!!map"
		if t == '[' {
			kind, tag = yaml.SequenceNode, "!!seq"
		}
		return p.collection(&yaml.Node{Kind: kind, Tag: tag, Line: line}, depth)
	case string:
		return scalar("!!str", t), nil
	case json.Number:
		// An integer too large for 64 bits is still a number, as YAML reads it.
		if _, err := t.Int64(); err != nil {
			return scalar("!!float", string(t)), nil
		}
		return scalar("!!int", string(t)), nil
	case bool:
		return scalar("!!bool", strconv.FormatBool(t)), nil
	case nil:
		return scalar("!!null", "null"), nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

// collection reads an object's keys and values, or an array's items, up to its closing
// delimiter. The decoder itself checks that keys are strings and delimiters match.
func (p *jsonParser) collection(n *yaml.Node, depth int) (*yaml.Node, error) {
	for p.dec.More() {
		item, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, item)
	}
	_, err := p.dec.Token() // the closing delimiter
	return n, err
}

// mappingFields checks that the document is a mapping of known, unique keys and returns the
// value node of each.
func mappingFields(root *yaml.Node) (map[string]*yaml.Node, error) {
	if root.Kind != yaml.MappingNode {
		return nil, invalidf("job document must be a mapping with name, playbook and the other fields, not a %s", nodeKindName(root))
	}
	fields := make(map[string]*yaml.Node, len(root.Content)/2)
	for i := 0; i+1 < len(root.Content); i += 2 {
		key := root.Content[i]
		if key.Kind != yaml.ScalarNode {
			return nil, invalidf("line %d: field names must be plain strings", key.Line)
		}
		name := key.Value
		if !isKnownField(name) {
			return nil, invalidf("%s: unknown field (line %d); known fields are %s", quoteField(name), key.Line, strings.Join(knownFields, ", "))
		}
		if _, dup := fields[name]; dup {
			return nil, invalidf("%s: given more than once (line %d)", name, key.Line)
		}
		fields[name] = root.Content[i+1]
	}
	return fields, nil
}

// nodeKindName names a YAML node's kind for error messages.
func nodeKindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "null"
		case "!!int", "!!float":
			return "number"
		case "!!bool":
			return "boolean"
		case "!!str":
			return "string"
		}
		return "value tagged " + n.Tag
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}

// maxDocumentDepth bounds how deeply a job document may nest, YAML as JSON: far more than any
// job needs, and far below what encoding/json reads back from the journal.
const maxDocumentDepth = maxJSONDepth

// expansion measures a node tree as it is once aliases are expanded, without expanding them:
// each anchored node is measured once and an alias costs what its anchor does.
type expansion struct {
	size     map[*yaml.Node]int64
	depth    map[*yaml.Node]int
	visiting map[*yaml.Node]bool // on the path from the field to the node being measured
	cycle    bool                // an alias names a node that contains it
}

// measure returns the expanded size of n (the bytes of its scalars, plus two for each node,
// roughly what it costs as JSON) and its depth (1 for a scalar).
func (e *expansion) measure(n *yaml.Node) (size int64, depth int) {
	n = unalias(n)
	if s, ok := e.size[n]; ok {
		return s, e.depth[n]
	}
	if e.visiting[n] {
		// YAML lets an alias name the collection it sits in: the expansion never ends.
		e.cycle = true
		return 0, maxDocumentDepth + 1
	}
	e.visiting[n] = true
	defer delete(e.visiting, n)
	size = int64(len(n.Value)) + 2
	for _, child := range n.Content {
		s, d := e.measure(child)
		size += s
		if d > depth {
			depth = d
		}
		if depth > maxDocumentDepth {
			break // deep enough to refuse; walk no further
		}
	}
	depth++
	e.size[n], e.depth[n] = size, depth
	return size, depth
}

// checkExpansion refuses a field whose YAML aliases make it larger than max bytes, or that
// nests deeper than maxDocumentDepth. A few hundred bytes of aliases can stand for gigabytes
// of values (the "billion laughs"), which would be held in memory, written to the journal and
// sent in every answer; the body limit alone does not see them. Only variables can nest or
// grow this way: every other field is a scalar or a list of scalars, which aliases cannot
// make larger than the value they name.
func checkExpansion(field string, node *yaml.Node, max int64) error {
	e := &expansion{size: map[*yaml.Node]int64{}, depth: map[*yaml.Node]int{}, visiting: map[*yaml.Node]bool{}}
	size, depth := e.measure(node)
	switch {
	case e.cycle:
		return invalidf("%s: a YAML alias refers to a collection that contains it", field)
	case depth > maxDocumentDepth:
		return invalidf("%s: nested more than %d levels deep", field, maxDocumentDepth)
	case max > 0 && size > max:
		return invalidf("%s: YAML aliases expand it to more than %d bytes (twice -max-body)", field, max)
	}
	return nil
}
