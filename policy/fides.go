package policy

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"gopkg.in/yaml.v3"
)

// The Fides (fideslang) keys of the categories and purposes. Each is a child of
// a key in fideslang's default taxonomy (its parent_key), so that Fides places
// it in the taxonomy and its policies apply to it.
var fidesCategory = [numCategories + 1]struct{ key, parent, name string }{
	TenantProfile: {"user.account.tenant_profile", "user.account", "Tenant profile"},
	ClientEnv:     {"user.device.client_env", "user.device", "Client environment"},
	AppAccess:     {"user.behavior.app_access", "user.behavior", "Application access history"},
	FeatureUse:    {"user.behavior.feature_use", "user.behavior", "Feature use"},
	Settings:      {"user.settings.tenant_settings", "user.settings", "Settings and customisations"},
	Operation:     {"system.operations.operation", "system.operations", "Operations and result codes"},
}

var fidesUse = [numPurposes]struct{ key, parent string }{
	Support:            {"essential.service.operations.support.failure_analysis", "essential.service.operations.support"},
	ServiceImprovement: {"functional.service.improve.feature_ranking", "functional.service.improve"},
	Marketing:          {"marketing.contract_comparison", "marketing"},
	FollowUp:           {"sales.follow_up", "sales"},
	InterviewSelection: {"functional.service.improve.interview_selection", "functional.service.improve"},
	ExternalAggregate:  {"third_party_sharing.anonymized_aggregates", "third_party_sharing"},
	ExternalConsented:  {"third_party_sharing.consented", "third_party_sharing"},
}

// FidesCategoryKey returns the Fides data_category key of c ("" if unknown).
func FidesCategoryKey(c Category) string {
	if !c.Valid() {
		return ""
	}
	return fidesCategory[c].key
}

// FidesUseKey returns the Fides data_use key of p ("" if unknown).
func FidesUseKey(p Purpose) string {
	if !p.Valid() {
		return ""
	}
	return fidesUse[p].key
}

// FidesSubject is the data subject of every declaration: the customer (tenant),
// whose users appear only pseudonymously.
const FidesSubject = "customer"

// FidesSystem is the fides_key of the Shukei system.
const FidesSystem = "shukei"

type fidesManifest struct {
	DataCategory []fidesTaxon  `yaml:"data_category"`
	DataUse      []fidesTaxon  `yaml:"data_use"`
	DataSubject  []fidesTaxon  `yaml:"data_subject"`
	System       []fidesSystem `yaml:"system"`
}

type fidesTaxon struct {
	FidesKey    string `yaml:"fides_key"`
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	ParentKey   string `yaml:"parent_key,omitempty"`
}

type fidesSystem struct {
	FidesKey            string             `yaml:"fides_key"`
	Name                string             `yaml:"name"`
	Description         string             `yaml:"description"`
	SystemType          string             `yaml:"system_type"`
	Meta                map[string]string  `yaml:"meta"`
	PrivacyDeclarations []fidesDeclaration `yaml:"privacy_declarations"`
}

type fidesDeclaration struct {
	Name                       string   `yaml:"name"`
	DataCategories             []string `yaml:"data_categories"`
	DataUse                    string   `yaml:"data_use"`
	DataSubjects               []string `yaml:"data_subjects"`
	RetentionPeriod            string   `yaml:"retention_period"`
	DataSharedWithThirdParties bool     `yaml:"data_shared_with_third_parties"`
	ThirdParties               string   `yaml:"third_parties,omitempty"`
}

// ExportTo writes the embedded policy's version in format ('shukei policy export --format F
// --version N'); only fides (ExportFides) is supported. Its errors name the flags.
func ExportTo(w io.Writer, format string, version int) error {
	if format != "fides" {
		return fmt.Errorf("--format %q: only fides is supported", format)
	}
	v, err := Embedded()
	if err != nil {
		return err
	}
	if version < 1 || version > v.Len() {
		return fmt.Errorf("--version %d: the embedded policy has versions 1..%d", version, v.Len())
	}
	b, err := ExportFides(v.Policy(version))
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ExportFides writes p as a fideslang manifest, so that the policy can be
// reviewed in Fides: the six categories as data_category entries, the purposes
// as data_use entries, the data subject, and the system "shukei" with one
// privacy declaration per matrix cell that is not none.
func ExportFides(p *Policy) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	m := fidesManifest{
		DataSubject: []fidesTaxon{{
			FidesKey:    FidesSubject,
			Name:        "Customer",
			Description: "A customer (tenant) of the cloud service; its users appear only as keyed pseudonyms.",
		}},
	}
	for _, c := range Categories() {
		info, fc := p.Categories[c], fidesCategory[c]
		m.DataCategory = append(m.DataCategory, fidesTaxon{
			FidesKey:    fc.key,
			Name:        fc.name,
			Description: fmt.Sprintf("%s Usage data, clause %s (%s). Shukei category %s.", info.Description, info.Clause, info.DescriptionJA, c),
			ParentKey:   fc.parent,
		})
	}
	for _, pur := range Purposes() {
		r, fu := p.Purposes[pur], fidesUse[pur]
		m.DataUse = append(m.DataUse, fidesTaxon{
			FidesKey:    fu.key,
			Name:        r.Title,
			Description: fmt.Sprintf("%s Clause %s (%s). Shukei purpose %s.", r.Description, r.Clause, r.TitleJA, pur),
			ParentKey:   fu.parent,
		})
	}

	sys := fidesSystem{
		FidesKey:    FidesSystem,
		Name:        "Shukei",
		Description: "Privacy-preserving usage analytics: tags each usage event with the purposes the cloud service data policy allows.",
		SystemType:  "Service",
		Meta: map[string]string{
			"policy_version":     fmt.Sprint(p.Version),
			"policy_title":       p.Title,
			"requires_consent":   fmt.Sprint(p.RequiresConsent),
			"k_min_tenants":      fmt.Sprint(p.K),
			"retention_event":    days(p.Retention.EventStore),
			"retention_post_end": days(p.Retention.AfterContractEnd),
		},
	}
	retention := fmt.Sprintf("%s in the event store; deleted %s after contract end (2(3))", days(p.Retention.EventStore), days(p.Retention.AfterContractEnd))
	for _, pur := range Purposes() {
		r := p.Purposes[pur]
		for _, c := range Categories() {
			g := p.Cell(c, pur)
			if g == None {
				continue
			}
			d := fidesDeclaration{
				Name:            fmt.Sprintf("%s for %s (%s, clause %s)", c, pur, g, r.Clause),
				DataCategories:  []string{fidesCategory[c].key},
				DataUse:         fidesUse[pur].key,
				DataSubjects:    []string{FidesSubject},
				RetentionPeriod: retention,
			}
			switch pur {
			case ExternalAggregate:
				d.DataSharedWithThirdParties = true
				d.ThirdParties = "recipients of differentially private cross-tenant releases (3(2)-4)"
			case ExternalConsented:
				d.DataSharedWithThirdParties = true
				d.ThirdParties = "parties the tenant consented to share its own data with (3(2)-1)"
			}
			sys.PrivacyDeclarations = append(sys.PrivacyDeclarations, d)
		}
	}
	m.System = []fidesSystem{sys}

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Fides manifest of Shukei policy v%d, generated by policy.ExportFides. Do not edit.\n", p.Version)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func days(d time.Duration) string { return fmt.Sprintf("%g days", d.Hours()/24) }
