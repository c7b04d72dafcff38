package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"go.yaml.in/yaml/v3"
)

// This file holds a job's inventory in its two richer shapes (the list of host names is in
// submission.go): a mapping in the shape of Ansible's YAML inventory (groups, or all, with
// hosts, vars and children), and the path of an inventory file or directory inside
// -inventory-dir. Host and group names are names, checked as host names are; vars are data
// as the job's variables are: the same names, the same -playbooks-only rule, written as
// !unsafe text, masked by the same secret names.

// groupName is what Ansible accepts as a group name without a warning.
var groupName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// maxGroupDepth bounds how deeply children may nest.
const maxGroupDepth = 20

// inventoryParser validates a mapping inventory, counting its hosts.
type inventoryParser struct {
	lim   specLimits
	hosts int
}

// parseInventoryGroups reads a mapping inventory into the plain form it is stored and written
// in: group name -> {"hosts": {host: vars}, "vars": {...}, "children": {group: ...}}.
func parseInventoryGroups(node *yaml.Node, lim specLimits) (map[string]any, error) {
	if err := checkExpansion("inventory", node, lim.MaxExpanded); err != nil {
		return nil, err
	}
	p := &inventoryParser{lim: lim}
	groups, err := p.groups("inventory", node, 0)
	if err != nil {
		return nil, err
	}
	if p.hosts == 0 {
		return nil, invalidf("inventory: must name at least one host")
	}
	return groups, nil
}

// groups reads a mapping of group names to groups.
func (p *inventoryParser) groups(field string, node *yaml.Node, depth int) (map[string]any, error) {
	if depth > maxGroupDepth {
		return nil, invalidf("%s: groups nest more than %d levels deep", field, maxGroupDepth)
	}
	pairs, err := mappingPairs(field, node)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(pairs))
	for _, kv := range pairs {
		name := kv.key
		if !groupName.MatchString(name) {
			return nil, invalidf("%s: %s is not a group name (letters, digits and _, not starting with a digit)", field, quoteField(name))
		}
		if depth == 0 && name == "plugin" {
			// Ansible reads a YAML file with a top-level plugin key as an inventory plugin's
			// configuration, not as an inventory.
			return nil, invalidf("%s: plugin is what names an inventory plugin in Ansible's YAML files, not a group", field)
		}
		g, err := p.group(field+"."+name, kv.value, depth)
		if err != nil {
			return nil, err
		}
		out[name] = g
	}
	return out, nil
}

// group reads one group: nothing, or hosts, vars and children.
func (p *inventoryParser) group(field string, node *yaml.Node, depth int) (map[string]any, error) {
	g := map[string]any{}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return g, nil
	}
	pairs, err := mappingPairs(field, node)
	if err != nil {
		return nil, err
	}
	for _, kv := range pairs {
		var v any
		switch kv.key {
		case "hosts":
			v, err = p.hostsOf(field+".hosts", kv.value)
		case "vars":
			v, err = p.vars(field+".vars", kv.value)
		case "children":
			v, err = p.groups(field+".children", kv.value, depth+1)
		default:
			return nil, invalidf("%s: %s is not part of a group; a group has hosts, vars and children", field, quoteField(kv.key))
		}
		if err != nil {
			return nil, err
		}
		g[kv.key] = v
	}
	return g, nil
}

// hostsOf reads a group's hosts: names, each with its vars or nothing.
func (p *inventoryParser) hostsOf(field string, node *yaml.Node) (map[string]any, error) {
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return map[string]any{}, nil
	}
	pairs, err := mappingPairs(field, node)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(pairs))
	for _, kv := range pairs {
		hostField := field + "." + kv.key
		if len(kv.key) > 253 {
			return nil, invalidf("%s: host name is %d bytes long; at most 253 are allowed", field, len(kv.key))
		}
		if err := checkHost(field, kv.key); err != nil {
			return nil, err
		}
		if p.hosts++; p.hosts > maxHosts {
			return nil, invalidf("inventory: holds more than %d hosts", maxHosts)
		}
		vars := map[string]any{}
		if !(kv.value.Kind == yaml.ScalarNode && kv.value.Tag == "!!null") {
			if vars, err = p.vars(hostField, kv.value); err != nil {
				return nil, err
			}
		}
		out[kv.key] = vars
	}
	return out, nil
}

// vars reads a mapping of variables under the rules of the job's own variables.
func (p *inventoryParser) vars(field string, node *yaml.Node) (map[string]any, error) {
	if node.Kind != yaml.MappingNode {
		return nil, invalidf("%s: must be a mapping of names to values, not a %s (line %d)", field, nodeKindName(node), node.Line)
	}
	var raw map[string]any
	if err := node.Decode(&raw); err != nil {
		return nil, invalidf("%s: %v", field, err)
	}
	for name := range raw {
		if err := checkVariableName(field, name, p.lim); err != nil {
			return nil, err
		}
	}
	vars, err := jsonCompatible(field, raw)
	if err != nil {
		return nil, err
	}
	return vars.(map[string]any), nil
}

// keyValue is one pair of a YAML mapping whose key is a plain string.
type keyValue struct {
	key   string
	value *yaml.Node
}

// mappingPairs returns a mapping's pairs, refusing a node that is not a mapping, a key that is
// not a string and a key given twice.
func mappingPairs(field string, node *yaml.Node) ([]keyValue, error) {
	node = unalias(node)
	if node.Kind != yaml.MappingNode {
		return nil, invalidf("%s: must be a mapping, not a %s (line %d)", field, nodeKindName(node), node.Line)
	}
	seen := map[string]bool{}
	pairs := make([]keyValue, 0, len(node.Content)/2)
	for i := 0; i+1 < len(node.Content); i += 2 {
		k := unalias(node.Content[i])
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
			return nil, invalidf("%s: keys must be strings (line %d)", field, k.Line)
		}
		if seen[k.Value] {
			return nil, invalidf("%s: %s is given twice (line %d)", field, quoteField(k.Value), k.Line)
		}
		seen[k.Value] = true
		pairs = append(pairs, keyValue{k.Value, unalias(node.Content[i+1])})
	}
	return pairs, nil
}

// inventoryHosts lists every host name of a mapping inventory, for the checks made again when
// a job starts and for the names a job shows openly.
func inventoryHosts(groups map[string]any) []string {
	var hosts []string
	var walk func(groups map[string]any)
	walk = func(groups map[string]any) {
		for _, g := range groups {
			g, _ := g.(map[string]any)
			hs, _ := g["hosts"].(map[string]any)
			for h := range hs {
				hosts = append(hosts, h)
			}
			children, _ := g["children"].(map[string]any)
			walk(children)
		}
	}
	walk(groups)
	sort.Strings(hosts)
	return hosts
}

// resolveInventoryPath resolves an inventory path against dir and checks that it names an
// existing file or directory that stays inside dir once symlinks are resolved, and outside
// dataDir.
func resolveInventoryPath(p, dir, dataDir string) (string, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", invalidf("inventory: %s does not exist", p)
		}
		return "", invalidf("inventory: cannot resolve %s: %v", p, err)
	}
	switch {
	case !isInside(real, dir):
		return "", invalidf("inventory: %s lies outside the inventory directory %s (-inventory-dir)", p, dir)
	case dataDir != "" && isInside(real, dataDir):
		return "", invalidf("inventory: %s lies inside charond's data directory %s (-data-dir)", p, dataDir)
	}
	info, err := os.Stat(real)
	if err != nil {
		return "", invalidf("inventory: cannot read %s: %v", p, err)
	}
	if !info.Mode().IsRegular() && !info.IsDir() {
		return "", invalidf("inventory: %s is neither a file nor a directory", p)
	}
	return real, nil
}

// inventoryNode builds the inventory file of a mapping inventory as YAML: names as they are
// (they are checked names), every var as unsafeNode writes it. A shape that is not the one
// parseInventoryGroups leaves (a damaged journal record) is an error, not a crash. localhost and 127.0.0.1 get the
// local connection, as in a list inventory, unless their own vars choose one.
func inventoryNode(groups map[string]any) (*yaml.Node, error) {
	doc := &yaml.Node{Kind: yaml.MappingNode}
	for _, name := range sortedKeys(groups) {
		group, ok := groups[name].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("group %s is not a mapping", name)
		}
		g, err := groupNode(group)
		if err != nil {
			return nil, err
		}
		doc.Content = append(doc.Content, plainKey(name), g)
	}
	return doc, nil
}

func groupNode(g map[string]any) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.MappingNode}
	if hosts, ok := g["hosts"].(map[string]any); ok {
		hn := &yaml.Node{Kind: yaml.MappingNode}
		for _, h := range sortedKeys(hosts) {
			vars, ok := hosts[h].(map[string]any)
			if !ok {
				return nil, fmt.Errorf("host %s: its vars are not a mapping", h)
			}
			if h == "localhost" || h == "127.0.0.1" {
				vars = withLocalConnection(vars)
			}
			vn, err := varsNode(vars)
			if err != nil {
				return nil, fmt.Errorf("host %s: %w", h, err)
			}
			hn.Content = append(hn.Content, plainKey(h), vn)
		}
		n.Content = append(n.Content, plainKey("hosts"), hn)
	}
	if vars, ok := g["vars"].(map[string]any); ok {
		vn, err := varsNode(vars)
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, plainKey("vars"), vn)
	}
	if children, ok := g["children"].(map[string]any); ok {
		cn, err := inventoryNode(children)
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, plainKey("children"), cn)
	}
	return n, nil
}

// withLocalConnection adds what Ansible's implicit localhost has, unless vars choose a
// connection themselves. The interpreter is a template of charond's own, written as one.
func withLocalConnection(vars map[string]any) map[string]any {
	if _, chosen := vars["ansible_connection"]; chosen {
		return vars
	}
	out := map[string]any{"ansible_connection": "local"}
	for k, v := range vars {
		out[k] = v
	}
	if _, chosen := vars["ansible_python_interpreter"]; !chosen {
		out["ansible_python_interpreter"] = localPython
	}
	return out
}

// localPython marks where the Python that runs Ansible is to be written as a template.
type templateOfOurs string

const localPython templateOfOurs = "{{ ansible_playbook_python }}"

// varsNode writes a mapping of vars with checked names as plain keys and every value !unsafe,
// except charond's own templates.
func varsNode(vars map[string]any) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range sortedKeys(vars) {
		var v *yaml.Node
		var err error
		if t, ours := vars[k].(templateOfOurs); ours {
			v = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: string(t), Style: yaml.DoubleQuotedStyle}
		} else if v, err = unsafeNode(vars[k]); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		n.Content = append(n.Content, plainKey(k), v)
	}
	return n, nil
}

func plainKey(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
}
