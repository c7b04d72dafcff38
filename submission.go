package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// This file validates a job submission: the node tree document.go builds from the body
// becomes a JobSpec, field by field, and every refusal names the field and what is wrong.

// priorityWords are the names a submission may give a priority.
var priorityWords = map[string]int{"low": 1, "normal": 5, "high": 10, "critical": 15}

// specLimits are the daemon settings that validation depends on.
type specLimits struct {
	PlaybookDir    string // absolute, symlinks resolved
	DataDir        string // likewise; a playbook may not lie in it
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	// MaxExpanded bounds a document's size once YAML aliases are expanded (-max-body): a small
	// body must not become a large job.
	MaxExpanded int64
	// PlaybooksOnly refuses embedded playbooks and ansible_* variables not in AllowVars.
	PlaybooksOnly bool
	AllowVars     []string // names or prefixes ending in '*'
	MaxForks      int      // the largest forks a job may ask for (-max-forks)
	InventoryDir  string   // absolute, symlinks resolved: inventory paths must lie inside it
	// DefaultIdleTimeout is the idle_timeout of a job that gives none (-default-idle-timeout).
	DefaultIdleTimeout time.Duration
}

// knownFields are the fields of a job document, in the order the README writes them.
var knownFields = []string{"name", "description", "playbook", "inventory", "variables", "priority", "timeout",
	"idle_timeout", "limit", "tags", "skip_tags", "check", "diff", "verbosity", "forks", "start_at_task", "concurrency"}

// parseJobSpec reads a job document (YAML, or JSON when isJSON) and validates every field.
// Every error it returns is an *apiError of kind errInvalid whose message names the field.
func parseJobSpec(body []byte, isJSON bool, lim specLimits) (*JobSpec, error) {
	root, err := decodeDocument(body, isJSON)
	if err != nil {
		return nil, err
	}
	fields, err := mappingFields(root)
	if err != nil {
		return nil, err
	}
	spec := &JobSpec{Inventory: []string{"localhost"}, Variables: map[string]any{}, Priority: defaultPriority,
		Timeout: lim.DefaultTimeout, IdleTimeout: lim.DefaultIdleTimeout}
	for _, name := range knownFields {
		node, ok := fields[name]
		if !ok {
			continue
		}
		if err := spec.setField(name, node, lim); err != nil {
			return nil, err
		}
	}
	if spec.Name == "" {
		return nil, invalidf("name: required")
	}
	if spec.Playbook == "" {
		return nil, invalidf("playbook: required")
	}
	return spec, nil
}

func isKnownField(name string) bool {
	for _, f := range knownFields {
		if f == name {
			return true
		}
	}
	return false
}

// quoteField shows an unknown field name safely, whatever bytes it holds.
func quoteField(name string) string {
	if len(name) > 64 {
		name = name[:64] + "…"
	}
	return strconv.Quote(name)
}

// unalias follows a YAML alias (*name) to the node it names.
func unalias(node *yaml.Node) *yaml.Node {
	for node.Kind == yaml.AliasNode && node.Alias != nil {
		node = node.Alias
	}
	return node
}

// setField validates one field's node and stores its value in the spec.
func (s *JobSpec) setField(name string, node *yaml.Node, lim specLimits) error {
	node = unalias(node)
	var err error
	switch name {
	case "name":
		s.Name, err = stringField(name, node, 200)
	case "description":
		s.Description, err = stringField(name, node, 4096)
	case "playbook":
		err = s.setPlaybook(node, lim)
	case "inventory":
		err = s.setInventory(node, lim)
	case "variables":
		s.Variables, err = parseVariables(node, lim)
	case "priority":
		s.Priority, err = parsePriority(node)
	case "timeout":
		s.Timeout, err = parseTimeout(node, lim)
	case "idle_timeout":
		s.IdleTimeout, err = parseIdleTimeout(node, lim)
	case "limit":
		s.Limit, err = parseLimit(node)
	case "tags", "skip_tags":
		var tags []string
		if tags, err = parseTags(name, node); name == "tags" {
			s.Tags = tags
		} else {
			s.SkipTags = tags
		}
	case "check":
		s.Check, err = boolField(name, node)
	case "diff":
		s.Diff, err = boolField(name, node)
	case "verbosity":
		s.Verbosity, err = intField(name, node, 0, maxVerbosity, "0 (the default) to 4, as -v to -vvvv")
	case "forks":
		s.Forks, err = intField(name, node, 1, lim.MaxForks, fmt.Sprintf("1 to %d (-max-forks)", lim.MaxForks))
	case "start_at_task":
		s.StartAtTask, err = optionText(name, node, 1024)
	case "concurrency":
		s.Concurrency, err = parseConcurrency(node)
	}
	return err
}

// concurrencyKey is what a concurrency key may be: a short name, such as deploy-web.
var concurrencyKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$`)

// parseConcurrency reads a concurrency key.
func parseConcurrency(node *yaml.Node) (string, error) {
	v, err := stringField("concurrency", node, 64)
	if err == nil && !concurrencyKey.MatchString(v) {
		err = invalidf("concurrency: %q is not a key: use 1 to 64 letters, digits, '.', '_', '-', ':' or '/', starting with a letter or digit", v)
	}
	return v, err
}

// maxVerbosity is -vvvv; Ansible counts no further.
const maxVerbosity = 4

// boolField reads a boolean: true or false, not a string that looks like one.
func boolField(name string, node *yaml.Node) (bool, error) {
	if node.Kind != yaml.ScalarNode || node.Tag != "!!bool" {
		return false, invalidf("%s: must be true or false, not a %s (line %d)", name, nodeKindName(node), node.Line)
	}
	var b bool
	if err := node.Decode(&b); err != nil {
		return false, invalidf("%s: %v", name, err)
	}
	return b, nil
}

// intField reads a whole number from min to max; want says the range in words.
func intField(name string, node *yaml.Node, min, max int, want string) (int, error) {
	if node.Kind != yaml.ScalarNode {
		return 0, invalidf("%s: must be a whole number from %s, not a %s", name, want, nodeKindName(node))
	}
	n, err := intValue(node)
	if err != nil || n < int64(min) || n > int64(max) {
		return 0, invalidf("%s: %q is not a whole number from %s", name, node.Value, want)
	}
	return int(n), nil
}

// optionText reads a string that becomes the value of an ansible-playbook option: one line of
// text, not empty, with no template marker (Ansible never needs one there, and a value
// forwarded from elsewhere must stay text).
func optionText(name string, node *yaml.Node, max int) (string, error) {
	v, err := stringField(name, node, max)
	switch {
	case err != nil:
		return "", err
	case strings.TrimSpace(v) == "":
		return "", invalidf("%s: must not be empty", name)
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return "", invalidf("%s: %q must not contain control characters", name, v)
	case hasTemplateMarker(v):
		return "", invalidf("%s: %q holds a template marker ({{, {%% or {#)", name, v)
	}
	return v, nil
}

// parseLimit reads a host pattern such as web1, web:&prod or !db1. It must not look like an
// option (-) or name a file of hosts (@), and holds no white space.
func parseLimit(node *yaml.Node) (string, error) {
	v, err := optionText("limit", node, 4096)
	switch {
	case err != nil:
		return "", err
	case strings.HasPrefix(v, "-"), strings.HasPrefix(v, "@"):
		return "", invalidf("limit: %q must not start with '-' or '@' (a limit is a host pattern, not an option or a file)", v)
	case strings.IndexFunc(v, unicode.IsSpace) >= 0:
		return "", invalidf("limit: %q must not contain white space; join patterns with ',' or ':'", v)
	}
	return v, nil
}

// maxTags bounds tags and skip_tags.
const maxTags = 100

// parseTags reads a list of tag names. Ansible splits the option's value at commas, so a name
// holds none, and no white space either.
func parseTags(name string, node *yaml.Node) ([]string, error) {
	if node.Kind != yaml.SequenceNode {
		return nil, invalidf("%s: must be a list of tag names, not a %s (line %d)", name, nodeKindName(node), node.Line)
	}
	if len(node.Content) == 0 || len(node.Content) > maxTags {
		return nil, invalidf("%s: must name from 1 to %d tags, not %d", name, maxTags, len(node.Content))
	}
	tags := make([]string, 0, len(node.Content))
	for i, item := range node.Content {
		field := fmt.Sprintf("%s[%d]", name, i)
		tag, err := optionText(field, unalias(item), 200)
		switch {
		case err != nil:
			return nil, err
		case strings.ContainsRune(tag, ','):
			return nil, invalidf("%s: tag %q must not contain a comma; give each tag as its own list entry", field, tag)
		case strings.IndexFunc(tag, unicode.IsSpace) >= 0:
			return nil, invalidf("%s: tag %q must not contain white space", field, tag)
		}
		tags = append(tags, tag)
	}
	return tags, nil
}

// stringField reads a string of at most max bytes with no NUL byte. A number or boolean is
// refused rather than taken as text: quote it to mean the text.
func stringField(name string, node *yaml.Node, max int) (string, error) {
	if node.Kind != yaml.ScalarNode || node.Tag != "!!str" {
		return "", invalidf("%s: must be a string, not a %s (line %d)", name, nodeKindName(node), node.Line)
	}
	v := node.Value
	if strings.ContainsRune(v, 0) {
		return "", invalidf("%s: must not contain a NUL byte", name)
	}
	if len(v) > max {
		return "", invalidf("%s: is %d bytes long; at most %d are allowed", name, len(v), max)
	}
	return v, nil
}

// maxPlaybookBytes bounds an embedded playbook; the request body limit bounds it further.
const maxPlaybookBytes = 16 << 20

// setPlaybook tells an embedded playbook (text with a newline) from a path (one line) and
// validates whichever it is.
func (s *JobSpec) setPlaybook(node *yaml.Node, lim specLimits) error {
	text, err := stringField("playbook", node, maxPlaybookBytes)
	if err != nil {
		return err
	}
	if strings.TrimSpace(text) == "" {
		return invalidf("playbook: required")
	}
	s.Playbook = text
	if strings.Contains(text, "\n") {
		if lim.PlaybooksOnly {
			return apiErrorf(errForbidden, "playbook: embedded playbooks are refused: charond runs with -playbooks-only, so a job names a playbook file inside -playbook-dir")
		}
		return checkEmbeddedPlaybook(text)
	}
	s.PlaybookPath, err = resolvePlaybookPath(strings.TrimSpace(text), lim.PlaybookDir, lim.DataDir)
	return err
}

// admitRelaunch holds the spec of a relaunch to the rules of the day that a submission meets
// as it is parsed, since charond's settings may have changed since the original came in: with
// -playbooks-only now, an embedded playbook or an ansible_* variable is refused. What the
// runner checks again when any job starts (paths, host names) it leaves to the runner.
func admitRelaunch(spec *JobSpec, lim specLimits) error {
	if spec.Embedded() && lim.PlaybooksOnly {
		return apiErrorf(errForbidden, "job %s has an embedded playbook, and charond now runs with -playbooks-only: it cannot be relaunched", spec.RelaunchOf)
	}
	for name := range spec.Variables {
		if err := checkVariableName("variables", name, lim); err != nil {
			return fmt.Errorf("job %s cannot be relaunched: %w", spec.RelaunchOf, err)
		}
	}
	return nil
}

// checkEmbeddedPlaybook makes sure the text parses as a YAML list of plays, so a broken
// playbook is refused at submission rather than failing later in the queue.
func checkEmbeddedPlaybook(text string) error {
	dec := yaml.NewDecoder(strings.NewReader(text))
	var plays yaml.Node
	if err := dec.Decode(&plays); err == io.EOF {
		return invalidf("playbook: embedded playbook is empty")
	} else if err != nil {
		return invalidf("playbook: embedded playbook is not valid YAML: %v", err)
	}
	// Ansible reads one document: a second one fails the job, so refuse it now.
	var more yaml.Node
	if err := dec.Decode(&more); err != io.EOF {
		return invalidf("playbook: embedded playbook holds more than one YAML document; a playbook is one list of plays")
	}
	if plays.Kind != yaml.DocumentNode || len(plays.Content) == 0 {
		return invalidf("playbook: embedded playbook is empty")
	}
	list := unalias(plays.Content[0])
	if list.Kind != yaml.SequenceNode {
		return invalidf("playbook: embedded playbook must be a YAML list of plays, not a %s (line %d)", nodeKindName(list), list.Line)
	}
	if len(list.Content) == 0 {
		return invalidf("playbook: embedded playbook holds no plays")
	}
	for i, play := range list.Content {
		if play = unalias(play); play.Kind != yaml.MappingNode {
			return invalidf("playbook: play %d must be a mapping (hosts, tasks, ...), not a %s (line %d)", i+1, nodeKindName(play), play.Line)
		}
	}
	return nil
}

// resolvePlaybookPath resolves a playbook path against playbookDir and checks that it names an
// existing regular file that stays inside playbookDir once symlinks are resolved, and outside
// dataDir (when given), which lies inside playbookDir by default: the files there (a job's
// vars and inventory, logs of output a job chose) are charond's state, not playbooks.
func resolvePlaybookPath(p, playbookDir, dataDir string) (string, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(playbookDir, p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", invalidf("playbook: file %s does not exist", p)
		}
		return "", invalidf("playbook: cannot resolve %s: %v", p, err)
	}
	if !isInside(real, playbookDir) {
		return "", invalidf("playbook: %s lies outside the playbook directory %s (-playbook-dir)", p, playbookDir)
	}
	if dataDir != "" && isInside(real, dataDir) {
		return "", invalidf("playbook: %s lies inside charond's data directory %s (-data-dir), which holds its state, not playbooks", p, dataDir)
	}
	info, err := os.Stat(real)
	if err != nil {
		return "", invalidf("playbook: cannot read %s: %v", p, err)
	}
	if !info.Mode().IsRegular() {
		return "", invalidf("playbook: %s is not a regular file", p)
	}
	return real, nil
}

// isInside reports whether path is dir or lies below it; both must be clean absolute paths.
func isInside(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	if err != nil {
		return false
	}
	return rel == "." || (rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)))
}

// setInventory reads the inventory in whichever of its three shapes it comes: a list of host
// names, a mapping in Ansible's YAML inventory shape, or the path of an inventory file or
// directory inside -inventory-dir.
func (s *JobSpec) setInventory(node *yaml.Node, lim specLimits) (err error) {
	s.Inventory = nil
	switch {
	case node.Kind == yaml.SequenceNode:
		s.Inventory, err = parseInventory(node)
	case node.Kind == yaml.MappingNode:
		s.InventoryGroups, err = parseInventoryGroups(node, lim)
	case node.Kind == yaml.ScalarNode && node.Tag == "!!str":
		var p string
		if p, err = optionText("inventory", node, 4096); err == nil {
			s.InventoryPath, err = resolveInventoryPath(p, lim.InventoryDir, lim.DataDir)
		}
	default:
		err = invalidf("inventory: must be a list of host names, a mapping of groups (Ansible's YAML inventory) or the path of an inventory inside -inventory-dir, not a %s (line %d)", nodeKindName(node), node.Line)
	}
	return err
}

// maxHosts bounds the inventory list.
const maxHosts = 10000

// parseInventory reads the list of hosts. Entries become keys of a generated inventory file,
// never command-line text, but white space, commas and a leading '-' are still refused: they
// are what turns a host list into something else in Ansible's own inventory syntax.
func parseInventory(node *yaml.Node) ([]string, error) {
	if node.Kind != yaml.SequenceNode {
		return nil, invalidf("inventory: must be a list of host names, not a %s (line %d)", nodeKindName(node), node.Line)
	}
	if len(node.Content) == 0 {
		return nil, invalidf("inventory: must name at least one host")
	}
	if len(node.Content) > maxHosts {
		return nil, invalidf("inventory: holds %d hosts; at most %d are allowed", len(node.Content), maxHosts)
	}
	hosts := make([]string, 0, len(node.Content))
	seen := map[string]bool{}
	for i, item := range node.Content {
		field := fmt.Sprintf("inventory[%d]", i)
		host, err := stringField(field, unalias(item), 253)
		if err != nil {
			return nil, err
		}
		if err := checkHost(field, host); err != nil {
			return nil, err
		}
		if !seen[host] {
			seen[host] = true
			hosts = append(hosts, host)
		}
	}
	return hosts, nil
}

// checkHost refuses what would make a host name more than a name to Ansible. Host names reach
// playbooks as inventory_hostname, which Ansible templates: "{{ lookup('pipe', ...) }}" as a
// host name runs a command on the controller. So beyond the cases with their own message, a
// host name may hold only letters, digits, '.', '-', '_' and ':' (IPv6 addresses, host:port).
func checkHost(field, host string) error {
	switch {
	case host == "":
		return invalidf("%s: host name is empty", field)
	case hasTemplateMarker(host):
		return invalidf("%s: host name %q holds a template marker ({{, {%% or {#): host names are data, and Ansible would run it as a template", field, host)
	case reservedGroups[strings.ToLower(host)]:
		return invalidf("%s: %q is the name of one of Ansible's built-in groups (all, ungrouped), not a host", field, host)
	case strings.HasPrefix(host, "-"):
		return invalidf("%s: host name %q must not start with '-'", field, host)
	case strings.ContainsAny(host, ","):
		return invalidf("%s: host name %q must not contain a comma; give each host as its own list entry", field, host)
	case strings.ContainsAny(host, "[]"):
		// Ansible reads web[1:5] as the range web1..web5: one entry could become millions.
		return invalidf("%s: host name %q must not contain [ or ]: Ansible would expand it as a range of hosts", field, host)
	case strings.IndexFunc(host, isSpaceOrControl) >= 0:
		return invalidf("%s: host name %q must not contain white space or control characters", field, host)
	case strings.IndexFunc(host, notHostNameRune) >= 0:
		return invalidf("%s: host name %q holds %q: a host name may hold only letters, digits, '.', '-', '_' and ':' (patterns and templates are not names)",
			field, host, string(host[strings.IndexFunc(host, notHostNameRune)]))
	}
	return nil
}

// reservedGroups are the groups every Ansible inventory has; a host of that name would only
// fail inside Ansible, or be read as the group.
var reservedGroups = map[string]bool{"all": true, "ungrouped": true}

// hasTemplateMarker reports whether s opens a Jinja expression, statement or comment.
func hasTemplateMarker(s string) bool {
	return strings.Contains(s, "{{") || strings.Contains(s, "{%") || strings.Contains(s, "{#")
}

func notHostNameRune(r rune) bool {
	return !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '-' || r == '_' || r == ':')
}

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// variableName is what Ansible accepts as a variable name.
var variableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseVariables reads the extra variables. Their values keep their YAML types (numbers stay
// numbers) because they reach ansible-playbook as a JSON file.
func parseVariables(node *yaml.Node, lim specLimits) (map[string]any, error) {
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return map[string]any{}, nil
	}
	if node.Kind != yaml.MappingNode {
		return nil, invalidf("variables: must be a mapping of names to values, not a %s (line %d)", nodeKindName(node), node.Line)
	}
	// Decoding expands aliases: bound what it would build before building it.
	if err := checkExpansion("variables", node, lim.MaxExpanded); err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := node.Decode(&raw); err != nil {
		return nil, invalidf("variables: %v", err)
	}
	for name := range raw {
		if err := checkVariableName("variables", name, lim); err != nil {
			return nil, err
		}
	}
	vars, err := jsonCompatible("variables", raw)
	if err != nil {
		return nil, err
	}
	return vars.(map[string]any), nil
}

// checkVariableName refuses a name Ansible would not take as a variable's, and, with
// -playbooks-only, one in Ansible's own namespace that -allow-vars does not name. The job's
// variables and an inventory's vars follow the same rule.
func checkVariableName(field, name string, lim specLimits) error {
	if !variableName.MatchString(name) {
		return invalidf("%s: %s is not a valid Ansible variable name (letters, digits and _, not starting with a digit)", field, quoteField(name))
	}
	if lim.PlaybooksOnly && isAnsibleSetting(name) && !nameAllowed(name, lim.AllowVars) {
		return apiErrorf(errForbidden, "%s: %s is refused: charond runs with -playbooks-only, and variables named ansible_* "+
			"choose what runs (interpreters, shells, connections and their commands); the operator can allow it with -allow-vars", field, name)
	}
	return nil
}

// isAnsibleSetting reports whether a variable name is in Ansible's own namespace, where
// ansible_python_interpreter, ansible_shell_executable, ansible_become_exe, ansible_connection,
// ansible_ssh_common_args (ProxyCommand) and every connection plugin's options live. The set
// grows with each plugin, so the prefix is the only list that stays complete.
func isAnsibleSetting(name string) bool {
	return strings.HasPrefix(strings.ToLower(name), "ansible_")
}

// nameAllowed reports whether name is one of the patterns: exact names, or prefixes ending in '*'.
func nameAllowed(name string, patterns []string) bool {
	for _, pattern := range patterns {
		if prefix, wildcard := strings.CutSuffix(pattern, "*"); wildcard {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if pattern == name {
			return true
		}
	}
	return false
}

// jsonCompatible converts decoded YAML into values encoding/json can write: maps with
// non-string keys are refused, and special floats too, since JSON has no spelling for them.
func jsonCompatible(path string, v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, item := range v {
			conv, err := jsonCompatible(path+"."+k, item)
			if err != nil {
				return nil, err
			}
			out[k] = conv
		}
		return out, nil
	case map[any]any:
		return nil, invalidf("%s: mapping keys must be strings", path)
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			conv, err := jsonCompatible(fmt.Sprintf("%s[%d]", path, i), item)
			if err != nil {
				return nil, err
			}
			out[i] = conv
		}
		return out, nil
	case float64:
		if v != v || v > 1.7976931348623157e308 || v < -1.7976931348623157e308 {
			return nil, invalidf("%s: %v cannot be passed to Ansible as JSON", path, v)
		}
		return v, nil
	case time.Time:
		// YAML timestamps decode to time.Time; Ansible would read them as strings anyway.
		return v.Format(time.RFC3339Nano), nil
	default:
		return v, nil
	}
}

// parsePriority reads 1..15 or one of the words low, normal, high, critical.
func parsePriority(node *yaml.Node) (int, error) {
	if node.Kind != yaml.ScalarNode {
		return 0, invalidf("priority: must be a number from %d to %d or one of low, normal, high, critical, not a %s", minPriority, maxPriority, nodeKindName(node))
	}
	if p, ok := priorityWords[strings.ToLower(node.Value)]; ok && node.Tag == "!!str" {
		return p, nil
	}
	p, err := intValue(node)
	if err != nil {
		return 0, invalidf("priority: %q is not a number from %d to %d nor one of low, normal, high, critical", node.Value, minPriority, maxPriority)
	}
	if p < minPriority || p > maxPriority {
		return 0, invalidf("priority: %d is out of range; use %d (low) to %d (critical)", p, minPriority, maxPriority)
	}
	return int(p), nil
}

// intValue reads an integer scalar as YAML spells integers (0o17, 0x1f, 1_000 and the like),
// so that every field reads a number the same way.
func intValue(node *yaml.Node) (int64, error) {
	if node.Tag != "!!int" {
		return 0, fmt.Errorf("not an integer")
	}
	var n int64
	err := node.Decode(&n)
	return n, err
}

// parseTimeout reads whole seconds or a Go duration string; 0 means the default timeout.
func parseTimeout(node *yaml.Node, lim specLimits) (time.Duration, error) {
	d, err := durationField("timeout", node)
	if err != nil {
		return 0, err
	}
	switch {
	case d == 0:
		return lim.DefaultTimeout, nil
	case d < 0:
		return 0, invalidf("timeout: must not be negative")
	case d > lim.MaxTimeout:
		return 0, invalidf("timeout: %s is above the maximum of %s (-max-timeout)", node.Value, lim.MaxTimeout)
	}
	return d, nil
}

// parseIdleTimeout reads how long a run may print nothing and report no task event: whole
// seconds or a duration, like timeout; 0 turns it off.
func parseIdleTimeout(node *yaml.Node, lim specLimits) (time.Duration, error) {
	d, err := durationField("idle_timeout", node)
	switch {
	case err != nil:
		return 0, err
	case d < 0:
		return 0, invalidf("idle_timeout: must not be negative (0 turns it off)")
	case d > lim.MaxTimeout:
		return 0, invalidf("idle_timeout: %s is above the maximum of %s (-max-timeout)", node.Value, lim.MaxTimeout)
	}
	return d, nil
}

// durationField reads a scalar of whole seconds or a Go duration string.
func durationField(name string, node *yaml.Node) (time.Duration, error) {
	if node.Kind != yaml.ScalarNode {
		return 0, invalidf("%s: must be seconds or a duration such as \"90s\" or \"5m\", not a %s", name, nodeKindName(node))
	}
	return timeoutValue(name, node)
}

// timeoutValue converts a timeout scalar to a duration. Seconds too large for a Duration are
// clamped rather than wrapped, so they fail the maximum check instead of turning negative.
func timeoutValue(name string, node *yaml.Node) (time.Duration, error) {
	if node.Tag == "!!int" {
		secs, err := intValue(node)
		if err != nil {
			return 0, invalidf("%s: %s is out of range", name, node.Value)
		}
		const maxSecs = int64(1<<63-1) / int64(time.Second)
		if secs > maxSecs {
			secs = maxSecs
		}
		if secs < -maxSecs {
			secs = -maxSecs
		}
		return time.Duration(secs) * time.Second, nil
	}
	d, err := time.ParseDuration(node.Value)
	if err != nil || node.Tag != "!!str" {
		return 0, invalidf("%s: %q is neither whole seconds nor a duration such as \"90s\" or \"5m\"", name, node.Value)
	}
	return d, nil
}
