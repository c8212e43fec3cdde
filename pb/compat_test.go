package pb_test

import (
	"bytes"
	"fmt"
	"testing"

	flowpb "github.com/netsampler/goflow2/v2/pb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// notUpstream lists our fields that goflow2 v2.2.6 leaves commented out in
// its flow.proto. Their numbers must stay free upstream.
var notUpstream = map[protoreflect.Name]bool{"flow_direction": true}

// firstEnrichment is the first number of the enricher's fields (flow.proto):
// from there on every field is ours, and goflow2 must declare none.
const firstEnrichment = 2001

// enrichmentFields is how many fields the enricher adds.
const enrichmentFields = 20

// upstream reports whether fd is one of goflow2's fields, not the enricher's
// nor one goflow2 leaves commented out.
func upstream(fd protoreflect.FieldDescriptor) bool {
	return fd.Number() < firstEnrichment && !notUpstream[fd.Name()]
}

func ourFields() protoreflect.FieldDescriptors {
	return (&pb.FlowMessage{}).ProtoReflect().Descriptor().Fields()
}

func theirFields() protoreflect.FieldDescriptors {
	return (&flowpb.FlowMessage{}).ProtoReflect().Descriptor().Fields()
}

// TestSchemaMatchesGoflow2 checks every field of ours against goflow2's field
// of the same name: same number, kind and cardinality (and enum values).
func TestSchemaMatchesGoflow2(t *testing.T) {
	ours, theirs := ourFields(), theirFields()
	if ours.Len() == 0 {
		t.Fatal("our FlowMessage has no fields")
	}
	enrichment := 0
	for i := 0; i < ours.Len(); i++ {
		o := ours.Get(i)
		th := theirs.ByName(o.Name())
		if o.Number() >= firstEnrichment {
			enrichment++
			if th != nil {
				t.Errorf("enrichment field %s (#%d) has the name of goflow2's field #%d", o.Name(), o.Number(), th.Number())
			}
			if other := theirs.ByNumber(o.Number()); other != nil {
				t.Errorf("enrichment field %s uses #%d, which goflow2 uses for %s", o.Name(), o.Number(), other.Name())
			}
			continue
		}
		if th == nil {
			if !notUpstream[o.Name()] {
				t.Errorf("field %s (#%d) does not exist in goflow2's FlowMessage", o.Name(), o.Number())
			}
			if other := theirs.ByNumber(o.Number()); other != nil {
				t.Errorf("field %s uses #%d, which goflow2 uses for %s", o.Name(), o.Number(), other.Name())
			}
			continue
		}
		if o.Number() != th.Number() {
			t.Errorf("field %s: number %d, goflow2 has %d", o.Name(), o.Number(), th.Number())
		}
		if o.Kind() != th.Kind() {
			t.Errorf("field %s: kind %v, goflow2 has %v", o.Name(), o.Kind(), th.Kind())
		}
		if o.Cardinality() != th.Cardinality() {
			t.Errorf("field %s: cardinality %v, goflow2 has %v", o.Name(), o.Cardinality(), th.Cardinality())
		}
		if o.Kind() == protoreflect.EnumKind {
			ov, tv := o.Enum().Values(), th.Enum().Values()
			for j := 0; j < ov.Len(); j++ {
				v := ov.Get(j)
				u := tv.ByName(v.Name())
				if u == nil || u.Number() != v.Number() {
					t.Errorf("enum %s value %s = %d has no identical goflow2 value", o.Enum().FullName(), v.Name(), v.Number())
				}
			}
		}
	}
	if enrichment != enrichmentFields {
		t.Errorf("%d fields at #%d and above, want the enricher's %d", enrichment, firstEnrichment, enrichmentFields)
	}
	// The whole range is ours: goflow2 declares nothing at 2001 or above.
	for i := 0; i < theirs.Len(); i++ {
		if th := theirs.Get(i); th.Number() >= firstEnrichment {
			t.Errorf("goflow2 declares %s at #%d, in the enricher's range", th.Name(), th.Number())
		}
	}
}

// distinctValue is a non-zero value for field i, different for every field,
// and large enough to need multi-byte varints where the kind allows.
func distinctValue(fd protoreflect.FieldDescriptor, i int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(uint32(1000 + i*7919))
	case protoreflect.Uint64Kind:
		return protoreflect.ValueOfUint64(uint64(1)<<40 + uint64(i)*104729)
	case protoreflect.BytesKind:
		b := make([]byte, 4+i%13)
		for j := range b {
			b[j] = byte(i*31 + j + 1)
		}
		return protoreflect.ValueOfBytes(b)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(vals.Len() - 1).Number())
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprintf("%s-%d-Zürich", fd.Name(), i))
	}
	panic(fmt.Sprintf("test needs a value for kind %v (field %s)", fd.Kind(), fd.Name()))
}

func sameValue(fd protoreflect.FieldDescriptor, a, b protoreflect.Value) bool {
	switch fd.Kind() {
	case protoreflect.BytesKind:
		return bytes.Equal(a.Bytes(), b.Bytes())
	case protoreflect.EnumKind:
		return a.Enum() == b.Enum()
	}
	return a.Interface() == b.Interface()
}

// TestGoflow2ToOurs fills goflow2's message in every field we carry, plus
// fields we do not (which must be skipped cleanly), and reads it with ours.
func TestGoflow2ToOurs(t *testing.T) {
	ours, theirs := ourFields(), theirFields()
	src := &flowpb.FlowMessage{
		// goflow2-only fields, including repeated ones: ours must skip them.
		FragmentId: 77, AsPath: []uint32{64496, 64511}, MplsLabel: []uint32{16, 17},
		BgpCommunities: []uint32{1, 2, 3}, MplsIp: [][]byte{{10, 0, 0, 1}},
	}
	srcR := src.ProtoReflect()
	want := map[protoreflect.Name]protoreflect.Value{}
	for i := 0; i < ours.Len(); i++ {
		o := ours.Get(i)
		th := theirs.ByName(o.Name())
		if th == nil {
			continue // checked by TestSchemaMatchesGoflow2
		}
		v := distinctValue(o, i)
		srcR.Set(th, v)
		want[o.Name()] = v
	}
	wire, err := proto.Marshal(src)
	if err != nil {
		t.Fatal(err)
	}
	var got pb.FlowMessage
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatalf("our FlowMessage cannot read goflow2's: %v", err)
	}
	gotR := got.ProtoReflect()
	checked := 0
	for i := 0; i < ours.Len(); i++ {
		o := ours.Get(i)
		w, ok := want[o.Name()]
		if !ok {
			if gotR.Has(o) {
				t.Errorf("field %s set to %v, goflow2 never sends it", o.Name(), gotR.Get(o))
			}
			continue
		}
		if !sameValue(o, w, gotR.Get(o)) {
			t.Errorf("field %s: goflow2 sent %v, we read %v", o.Name(), w, gotR.Get(o))
		}
		checked++
	}
	if want := ours.Len() - len(notUpstream) - enrichmentFields; checked != want {
		t.Errorf("checked %d fields, want %d", checked, want)
	}
	// The goflow2-only fields travel on as unknown fields, so re-encoding
	// with ours loses nothing.
	again, err := proto.Marshal(&got)
	if err != nil {
		t.Fatal(err)
	}
	var back flowpb.FlowMessage
	if err := proto.Unmarshal(again, &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(src, &back) {
		t.Errorf("goflow2 → ours → goflow2 changed the message:\n got %v\nwant %v", &back, src)
	}
}

// TestOursToGoflow2 fills every field of ours and reads it with goflow2's.
func TestOursToGoflow2(t *testing.T) {
	ours, theirs := ourFields(), theirFields()
	var src pb.FlowMessage
	srcR := src.ProtoReflect()
	for i := 0; i < ours.Len(); i++ {
		srcR.Set(ours.Get(i), distinctValue(ours.Get(i), i))
	}
	wire, err := proto.Marshal(&src)
	if err != nil {
		t.Fatal(err)
	}
	var got flowpb.FlowMessage
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatalf("goflow2's FlowMessage cannot read ours: %v", err)
	}
	gotR := got.ProtoReflect()
	for i := 0; i < ours.Len(); i++ {
		o := ours.Get(i)
		want := distinctValue(o, i)
		th := theirs.ByName(o.Name())
		if !upstream(o) {
			// Upstream keeps it as an unknown field with our number and value.
			if th != nil || !unknownHas(gotR.GetUnknown(), o, want) {
				t.Errorf("field %s (#%d) not preserved as an unknown field by goflow2", o.Name(), o.Number())
			}
			continue
		}
		if !sameValue(o, want, gotR.Get(th)) {
			t.Errorf("field %s: we sent %v, goflow2 read %v", o.Name(), want, gotR.Get(th))
		}
	}
}

// unknownHas reports whether the unknown fields b hold fd's number with
// want's value (a varint, or a string's bytes).
func unknownHas(b []byte, fd protoreflect.FieldDescriptor, want protoreflect.Value) bool {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return false
		}
		b = b[l:]
		if n == fd.Number() && typ == protowire.VarintType {
			v, l := protowire.ConsumeVarint(b)
			switch fd.Kind() {
			case protoreflect.EnumKind:
				return l > 0 && v == uint64(want.Enum())
			case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
				return l > 0 && v == want.Uint()
			case protoreflect.BoolKind:
				return l > 0 && (v != 0) == want.Bool()
			}
			return false
		}
		if n == fd.Number() && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			return l > 0 && fd.Kind() == protoreflect.StringKind && string(v) == want.String()
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return false
		}
		b = b[l:]
	}
	return false
}
