#!/usr/bin/env python3
"""Drives s2s-apiserver with the official Scaleway SDK (scaleway==2.12.0).

Usage: sdk_test.py phase1|phase2|tenants API_URL TOKEN STATE_FILE

phase1 exercises every endpoint and every validation rule, then ends on an
acknowledged write and records what it created in STATE_FILE; the Rust
harness then SIGKILLs the server, restarts it, and runs phase2, which checks
everything survived. tenants drives two keys confined to two projects
(api.keys in the harness's config) and checks that neither sees nor
touches the other's resources. Exits non-zero on any failure, prints a
summary line.
"""

import base64
import json
import sys
import time

from scaleway import Client
from scaleway.s2s_vpn.v1alpha1 import (
    ChangeConnectionPskRequestSecret,
    ConnectionCipher,
    CreateConnectionRequestBgpConfig,
    CreateVpnGatewayRequestPublicConfig,
    CreateVpnGatewayRequestPublicTunnelConfig,
    CreateVpnGatewayRequestSingleIpTunnel,
    CreateVpnGatewayRequestDualIpTunnel,
    S2SVpnV1Alpha1API,
)
from scaleway.secret.v1beta1 import SecretV1Beta1API
from scaleway_core.api import ScalewayException

ACCESS_KEY = "SCWXXXXXXXXXXXXXXXXX"
PN_DUAL = "8a6f4e3c-0b1d-4c6e-9f5a-2d7b8c9e0f11"
PN_V4 = "9b7f5f4d-1c2e-4d7f-8a6b-3e8c9d0f1a22"
IP4_A = "5b3e2a10-7c4d-4e8f-a1b2-c3d4e5f60718"  # 192.0.2.1
IP6_A = "6c4f3b21-8d5e-4f90-b2c3-d4e5f6071829"  # 2001:db8::1
IP4_B = "7d504c32-9e6f-4a01-83d4-e5f607182930"  # 192.0.2.2
IP6_B = "8e615d43-af70-4b12-94e5-f60718293041"  # 2001:db8::2
IP4_C = "9f726e54-b081-4c23-a5f6-071829304152"  # 192.0.2.3
IP4_D = "a0837f65-c192-4d34-b607-18293041526a"  # 192.0.2.4
IP4_E = "b1948076-d2a3-4e45-8718-293041526374"  # 192.0.2.5
# Two tenants: a key, a project and an organization each (the harness's
# [[api.keys]]).
TENANTS = {
    "a": ("a5a5a5a5-5555-4555-8555-55555555555a", "aaaaaaaa-1111-4111-8111-111111111111",
          "aaaaaaaa-0000-4000-8000-00000000000a"),
    "b": ("b5b5b5b5-5555-4555-8555-55555555555b", "bbbbbbbb-2222-4222-8222-222222222222",
          "bbbbbbbb-0000-4000-8000-00000000000b"),
}

passed = 0
failures = []


def check(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)


def expect_error(what, fn, status, typ, field=None):
    """Calls fn, expects a ScalewayException with this status and type; for
    invalid_arguments, the field must be named in details and message."""
    try:
        fn()
    except ScalewayException as e:
        body = e.response.json()
        ok = e.status_code == status and body.get("type") == typ and "message" in body
        if ok and field is not None:
            names = [d.get("argument_name", "") for d in body.get("details", [])]
            ok = any(n.startswith(field) for n in names) and field in body["message"]
        check(ok, f"{what}: expected {status} {typ} {field or ''}, got {e.status_code} {body}")
        return body
    except Exception as e:  # noqa: BLE001
        check(False, f"{what}: expected {status} {typ}, got exception {e!r}")
        return None
    check(False, f"{what}: expected {status} {typ}, but the call succeeded")
    return None


IKE = [ConnectionCipher(encryption="aes256gcm", dh_group="ecp256"),
       ConnectionCipher(encryption="aes256", integrity="sha256", dh_group="modp2048")]
ESP = [ConnectionCipher(encryption="aes256gcm"),
       ConnectionCipher(encryption="aes128", integrity="sha256", dh_group="curve25519")]


def psk_of(secrets, conn):
    r = secrets.access_secret_version(secret_id=conn.secret_id, revision=str(conn.secret_revision))
    check(r.secret_id == conn.secret_id and r.revision == conn.secret_revision, "secret access echoes id/revision")
    return base64.b64decode(r.data).decode()


def phase1(api, secrets, bad_api, state):
    # --- gateway types
    types = api.list_vpn_gateway_types()
    names = sorted(t.name for t in types.gateway_types)
    check(names == ["VGW-M", "VGW-S"] and types.total_count == 2, f"gateway types {names}")
    vgws = [t for t in types.gateway_types if t.name == "VGW-S"][0]
    check(vgws.allowed_connections == 2 and vgws.bandwidth == 100000000 and vgws.region == "fr-par",
          "VGW-S fields")
    page = api.list_vpn_gateway_types(page=2, page_size=1)
    check(len(page.gateway_types) == 1 and page.total_count == 2, "gateway types pagination")

    # --- auth and region
    expect_error("bad token", lambda: bad_api.list_vpn_gateways(), 401, "denied_authentication")
    expect_error("unknown region", lambda: api.list_vpn_gateways(region="nl-ams"), 400,
                 "invalid_arguments", "region")

    # --- VPN gateways: validation
    expect_error("unknown gateway type", lambda: api.create_vpn_gateway(
        name="x", gateway_type="VGW-XL", private_network_id=PN_DUAL), 400, "invalid_arguments", "gateway_type")
    expect_error("unknown private network", lambda: api.create_vpn_gateway(
        name="x", gateway_type="VGW-S", private_network_id="00000000-dead-beef-0000-000000000000"),
        400, "invalid_arguments", "private_network_id")
    expect_error("empty name", lambda: api.create_vpn_gateway(
        name="", gateway_type="VGW-S", private_network_id=PN_DUAL), 400, "invalid_arguments", "name")
    expect_error("unknown public ip", lambda: api.create_vpn_gateway(
        name="x", gateway_type="VGW-S", private_network_id=PN_DUAL,
        public_config=CreateVpnGatewayRequestPublicConfig(ipam_ipv4_id="nope")),
        400, "invalid_arguments", "public_config.ipam_ipv4_id")
    expect_error("IPv6 id as ipv4", lambda: api.create_vpn_gateway(
        name="x", gateway_type="VGW-S", private_network_id=PN_DUAL,
        public_config=CreateVpnGatewayRequestPublicConfig(ipam_ipv4_id=IP6_A)),
        400, "invalid_arguments", "public_config.ipam_ipv4_id")
    expect_error("bad tag", lambda: api.create_vpn_gateway(
        name="x", gateway_type="VGW-S", private_network_id=PN_DUAL, tags=[""]),
        400, "invalid_arguments", "tags[0]")

    # --- VPN gateways: create in all three shapes
    gw_dual = api.create_vpn_gateway(
        name="gw-dual", gateway_type="VGW-S", private_network_id=PN_DUAL, tags=["prod", "dual"],
        public_config=CreateVpnGatewayRequestPublicConfig(ipam_ipv4_id=IP4_A, ipam_ipv6_id=IP6_A))
    check(gw_dual.status in ("provisioning", "active") and gw_dual.asn == 12876
          and gw_dual.public_config.ipam_ipv4_id == IP4_A and gw_dual.public_config.ipam_ipv6_id == IP6_A
          and gw_dual.region == "fr-par" and gw_dual.zone == "fr-par-1" and gw_dual.created_at is not None,
          f"gw_dual fields {gw_dual}")
    expect_error("public ip already used", lambda: api.create_vpn_gateway(
        name="x", gateway_type="VGW-S", private_network_id=PN_DUAL,
        public_config=CreateVpnGatewayRequestPublicConfig(ipam_ipv4_id=IP4_A)),
        400, "invalid_arguments", "public_config.ipam_ipv4_id")
    gw_v4 = api.create_vpn_gateway(
        name="gw-v4", gateway_type="VGW-M", private_network_id=PN_V4, tags=["prod"],
        public_tunnel_config=CreateVpnGatewayRequestPublicTunnelConfig(
            single_ipv4_tunnel=CreateVpnGatewayRequestSingleIpTunnel(ipam_id=IP4_B)))
    check(gw_v4.public_config.ipam_ipv4_id == IP4_B and gw_v4.public_config.ipam_ipv6_id is None, "gw_v4 ips")
    gw_6 = api.create_vpn_gateway(
        name="gw-v6", gateway_type="VGW-M", private_network_id=PN_DUAL,
        public_tunnel_config=CreateVpnGatewayRequestPublicTunnelConfig(
            dual_ipv4v6_tunnel=CreateVpnGatewayRequestDualIpTunnel(ipam_ipv4_id=IP4_C, ipam_ipv6_id=IP6_B)))
    check(gw_6.public_config.ipam_ipv6_id == IP6_B, "dual tunnel config")

    # The simulated agent takes gateways provisioning -> active.
    for gw in (gw_dual, gw_v4, gw_6):
        got = api.wait_for_vpn_gateway(gateway_id=gw.id)
        check(got.status == "active", f"gateway becomes active, got {got.status}")

    # --- VPN gateways: get, list, filters, order, pagination, update
    g = api.get_vpn_gateway(gateway_id=gw_v4.id)
    check(g.name == "gw-v4" and g.gateway_type == "VGW-M" and g.private_network_id == PN_V4, "get vpn gateway")
    expect_error("get unknown gateway", lambda: api.get_vpn_gateway(gateway_id="nope"), 404, "not_found")
    lst = api.list_vpn_gateways()
    check(lst.total_count == 3 and [x.name for x in lst.gateways] == ["gw-dual", "gw-v4", "gw-v6"],
          "list vpn gateways in creation order")
    lst = api.list_vpn_gateways(order_by="name_desc")
    check([x.name for x in lst.gateways] == ["gw-v6", "gw-v4", "gw-dual"], "order_by name_desc")
    lst = api.list_vpn_gateways(order_by="created_at_desc", page=1, page_size=2)
    check(lst.total_count == 3 and [x.name for x in lst.gateways] == ["gw-v6", "gw-v4"], "page 1 size 2 desc")
    lst = api.list_vpn_gateways(page=2, page_size=2)
    check(lst.total_count == 3 and [x.name for x in lst.gateways] == ["gw-v6"], "page 2 size 2")
    check(len(api.list_vpn_gateways_all(page_size=1)) == 3, "list_all over pages of 1")
    check(api.list_vpn_gateways(tags=["prod"]).total_count == 2, "filter tags")
    check(api.list_vpn_gateways(tags=["prod", "dual"]).total_count == 1, "filter tags (all)")
    check(api.list_vpn_gateways(name="v4").total_count == 1, "filter name substring")
    check(api.list_vpn_gateways(gateway_types=["VGW-M"]).total_count == 2, "filter gateway_types")
    check(api.list_vpn_gateways(private_network_ids=[PN_V4]).total_count == 1, "filter private_network_ids")
    check(api.list_vpn_gateways(statuses=["active"]).total_count == 3, "filter statuses")
    check(api.list_vpn_gateways(statuses=["failed"]).total_count == 0, "filter statuses (none)")
    expect_error("bad order_by", lambda: api.list_vpn_gateways(order_by="color_asc"), 400,
                 "invalid_arguments", "order_by")
    expect_error("page_size too big", lambda: api.list_vpn_gateways(page_size=1000), 400,
                 "invalid_arguments", "page_size")
    u = api.update_vpn_gateway(gateway_id=gw_6.id, name="gw-v6-renamed", tags=["lab"])
    check(u.name == "gw-v6-renamed" and u.tags == ["lab"], "update vpn gateway")
    expect_error("private network immutable", lambda: api._throw_on_error(api._request(
        "PATCH", f"/s2s-vpn/v1alpha1/regions/fr-par/vpn-gateways/{gw_6.id}",
        body={"private_network_id": PN_V4})), 400, "invalid_arguments", "private_network_id")

    # --- customer gateways
    expect_error("cgw no ip", lambda: api.create_customer_gateway(name="c", asn=65000), 400,
                 "invalid_arguments", "ipv4_public")
    expect_error("cgw asn 12876", lambda: api.create_customer_gateway(
        name="c", asn=12876, ipv4_public="203.0.113.10"), 400, "invalid_arguments", "asn")
    expect_error("cgw asn 0", lambda: api.create_customer_gateway(
        name="c", asn=0, ipv4_public="203.0.113.10"), 400, "invalid_arguments", "asn")
    expect_error("cgw asn too big", lambda: api.create_customer_gateway(
        name="c", asn=2**32, ipv4_public="203.0.113.10"), 400, "invalid_arguments", "asn")
    expect_error("cgw ipv4 not ipv4", lambda: api.create_customer_gateway(
        name="c", asn=65000, ipv4_public="2001:db8::10"), 400, "invalid_arguments", "ipv4_public")
    expect_error("cgw ipv6 garbage", lambda: api.create_customer_gateway(
        name="c", asn=65000, ipv6_public="not-an-ip"), 400, "invalid_arguments", "ipv6_public")
    expect_error("cgw is one of our gateways", lambda: api.create_customer_gateway(
        name="c", asn=65000, ipv4_public="192.0.2.1"), 400, "invalid_arguments", "ipv4_public")
    cg_dual = api.create_customer_gateway(name="cust-dual", asn=65010, tags=["site-a"],
                                          ipv4_public="203.0.113.10", ipv6_public="2001:db8:ffff::10")
    check(cg_dual.asn == 65010 and cg_dual.public_ipv4 == "203.0.113.10"
          and cg_dual.public_ipv6 == "2001:db8:ffff::10", "customer gateway fields")
    cg_v6 = api.create_customer_gateway(name="cust-v6", asn=4200000000, ipv6_public="2001:db8:ffff::20")
    cg_v4 = api.create_customer_gateway(name="cust-v4", asn=64600, ipv4_public="198.51.100.20")
    check(api.get_customer_gateway(gateway_id=cg_v6.id).asn == 4200000000, "4-octet asn")
    lst = api.list_customer_gateways(order_by="name_asc")
    check([c.name for c in lst.gateways] == ["cust-dual", "cust-v4", "cust-v6"] and lst.total_count == 3,
          "list customer gateways name_asc")
    check(api.list_customer_gateways(tags=["site-a"]).total_count == 1, "cgw tags filter")
    check(api.list_customer_gateways(name="v6", page_size=1).gateways[0].id == cg_v6.id, "cgw name filter")
    u = api.update_customer_gateway(gateway_id=cg_v4.id, name="cust-v4b", asn=64601)
    check(u.name == "cust-v4b" and u.asn == 64601, "update customer gateway")
    expect_error("update cgw asn 12876", lambda: api.update_customer_gateway(gateway_id=cg_v4.id, asn=12876),
                 400, "invalid_arguments", "asn")

    # --- routing policies
    expect_error("rp v6 prefix in v4 policy", lambda: api.create_routing_policy(
        name="r", is_ipv6=False, prefix_filter_in=["2001:db8::/32"]), 400, "invalid_arguments", "prefix_filter_in[0]")
    expect_error("rp garbage prefix", lambda: api.create_routing_policy(
        name="r", is_ipv6=False, prefix_filter_out=["10.0.0.0/8", "10.0.0.0/99"]),
        400, "invalid_arguments", "prefix_filter_out[1]")
    expect_error("rp host bits", lambda: api.create_routing_policy(
        name="r", is_ipv6=True, prefix_filter_in=["2001:db8::1/32"]), 400, "invalid_arguments", "prefix_filter_in[0]")
    rp4 = api.create_routing_policy(name="rp-v4", is_ipv6=False, prefix_filter_in=["10.10.0.0/16"],
                                    prefix_filter_out=["198.51.100.0/24"])
    rp6 = api.create_routing_policy(name="rp-v6", is_ipv6=True, prefix_filter_in=["2001:db8:aaaa::/48"],
                                    prefix_filter_out=["2001:db8:100::/64"])
    rp4b = api.create_routing_policy(name="rp-v4-b", is_ipv6=False, prefix_filter_in=["10.20.0.0/16"])
    check(rp4.prefix_filter_in == ["10.10.0.0/16"] and not rp4.is_ipv6 and rp6.is_ipv6, "routing policy fields")
    check(api.list_routing_policies(ipv6=True).total_count == 1, "rp ipv6 filter")
    check(api.list_routing_policies(ipv6=False).total_count == 2, "rp ipv4 filter")
    check([p.name for p in api.list_routing_policies(order_by="name_desc").routing_policies]
          == ["rp-v6", "rp-v4-b", "rp-v4"], "rp name_desc")
    u = api.update_routing_policy(routing_policy_id=rp4b.id, prefix_filter_in=["10.30.0.0/16", "10.31.0.0/16"])
    check(u.prefix_filter_in == ["10.30.0.0/16", "10.31.0.0/16"], "update routing policy")
    expect_error("update rp wrong family", lambda: api.update_routing_policy(
        routing_policy_id=rp4b.id, prefix_filter_out=["2001:db8::/32"]), 400, "invalid_arguments", "prefix_filter_out[0]")
    check(api.get_routing_policy(routing_policy_id=rp4b.id).prefix_filter_in == ["10.30.0.0/16", "10.31.0.0/16"],
          "failed update left the policy unchanged")

    # --- connections: validation
    def cc(**kw):
        args = dict(name="c", is_ipv6=False, initiation_policy="vpn_gateway", ikev2_ciphers=IKE,
                    esp_ciphers=ESP, enable_route_propagation=False, vpn_gateway_id=gw_dual.id,
                    customer_gateway_id=cg_dual.id,
                    bgp_config_ipv4=CreateConnectionRequestBgpConfig(routing_policy_id=rp4.id))
        args.update(kw)
        return lambda: api.create_connection(**args)

    expect_error("conn unknown vgw", cc(vpn_gateway_id="nope"), 404, "not_found")
    expect_error("conn unknown cgw", cc(customer_gateway_id="nope"), 404, "not_found")
    expect_error("conn no shared family", cc(vpn_gateway_id=gw_v4.id, customer_gateway_id=cg_v6.id,
                                             is_ipv6=True), 400, "invalid_arguments", "customer_gateway_id")
    expect_error("conn is_ipv6 not shared", cc(customer_gateway_id=cg_v4.id, is_ipv6=True), 400,
                 "invalid_arguments", "is_ipv6")
    expect_error("conn no routing policy", cc(bgp_config_ipv4=None), 400, "invalid_arguments", "bgp_config_ipv4")
    expect_error("conn v6 policy in v4 slot", cc(bgp_config_ipv4=CreateConnectionRequestBgpConfig(
        routing_policy_id=rp6.id)), 400, "invalid_arguments", "bgp_config_ipv4.routing_policy_id")
    expect_error("conn v4 policy in v6 slot", cc(bgp_config_ipv6=CreateConnectionRequestBgpConfig(
        routing_policy_id=rp4b.id)), 400, "invalid_arguments", "bgp_config_ipv6.routing_policy_id")
    expect_error("conn ipv6 session on a v4-only private network", cc(
        vpn_gateway_id=gw_v4.id, customer_gateway_id=cg_v4.id, bgp_config_ipv4=None,
        bgp_config_ipv6=CreateConnectionRequestBgpConfig(routing_policy_id=rp6.id)),
        400, "invalid_arguments", "bgp_config_ipv6")
    expect_error("conn unknown initiation policy", cc(initiation_policy="unknown_initiation_policy"), 400,
                 "invalid_arguments", "initiation_policy")
    expect_error("conn bogus initiation policy", cc(initiation_policy="whoever"), 400,
                 "invalid_arguments", "initiation_policy")
    expect_error("conn no ike ciphers", cc(ikev2_ciphers=[]), 400, "invalid_arguments", "ikev2_ciphers")
    expect_error("conn bad encryption", cc(ikev2_ciphers=[ConnectionCipher(encryption="des", dh_group="ecp256")]),
                 400, "invalid_arguments", "ikev2_ciphers[0].encryption")
    expect_error("conn bad integrity", cc(esp_ciphers=[ConnectionCipher(encryption="aes128", integrity="md5")]),
                 400, "invalid_arguments", "esp_ciphers[0].integrity")
    expect_error("conn missing integrity", cc(esp_ciphers=[ConnectionCipher(encryption="aes128")]),
                 400, "invalid_arguments", "esp_ciphers[0].integrity")
    expect_error("conn bad dh", cc(esp_ciphers=[ConnectionCipher(encryption="aes128gcm", dh_group="modp768")]),
                 400, "invalid_arguments", "esp_ciphers[0].dh_group")
    expect_error("conn ike without dh", cc(ikev2_ciphers=[ConnectionCipher(encryption="aes128gcm")]),
                 400, "invalid_arguments", "ikev2_ciphers[0].dh_group")
    expect_error("conn interco wrong family", cc(bgp_config_ipv4=CreateConnectionRequestBgpConfig(
        routing_policy_id=rp4.id, private_ip="fd00::/127", peer_private_ip="fd00::1/127")),
        400, "invalid_arguments", "bgp_config_ipv4.private_ip")
    expect_error("conn interco not same subnet", cc(bgp_config_ipv4=CreateConnectionRequestBgpConfig(
        routing_policy_id=rp4.id, private_ip="169.254.100.1/30", peer_private_ip="169.254.100.9/30")),
        400, "invalid_arguments", "bgp_config_ipv4.peer_private_ip")
    expect_error("conn interco half given", cc(bgp_config_ipv4=CreateConnectionRequestBgpConfig(
        routing_policy_id=rp4.id, private_ip="169.254.100.1/30")),
        400, "invalid_arguments", "bgp_config_ipv4.peer_private_ip")

    # --- connections: create
    r = api.create_connection(
        name="conn-dual", is_ipv6=True, initiation_policy="customer_gateway", ikev2_ciphers=IKE,
        esp_ciphers=ESP, enable_route_propagation=True, vpn_gateway_id=gw_dual.id,
        customer_gateway_id=cg_dual.id, tags=["t1"],
        bgp_config_ipv4=CreateConnectionRequestBgpConfig(routing_policy_id=rp4.id,
                                                         private_ip="169.254.50.1/30",
                                                         peer_private_ip="169.254.50.2/30"),
        bgp_config_ipv6=CreateConnectionRequestBgpConfig(routing_policy_id=rp6.id))
    c1 = r.connection
    check(r.pre_shared_key is None, "no PSK in the create response")
    check(c1.is_ipv6 and c1.tunnel_status_ipv4 is not None and c1.tunnel_status_ipv6 is not None,
          f"dual tunnel statuses {c1.tunnel_status_ipv4} {c1.tunnel_status_ipv6}")
    check(c1.bgp_session_ipv4.private_ip == "169.254.50.1/30"
          and c1.bgp_session_ipv4.peer_private_ip == "169.254.50.2/30"
          and c1.bgp_session_ipv4.routing_policy_id == rp4.id, "given interco taken")
    check(c1.bgp_session_ipv6.private_ip.startswith("fd") and c1.bgp_session_ipv6.private_ip.endswith("/127")
          and c1.bgp_session_ipv6.routing_policy_id == rp6.id, f"v6 interco allocated {c1.bgp_session_ipv6}")
    check(c1.secret_revision == 1 and c1.secret_id, "secret revision 1")
    check([x.encryption for x in c1.ikev2_ciphers] == ["aes256gcm", "aes256"]
          and c1.esp_ciphers[1].dh_group == "curve25519", "ciphers stored")
    check(c1.route_propagation_enabled and c1.initiation_policy == "customer_gateway", "create flags")
    psk1 = psk_of(secrets, c1)
    check(len(psk1) >= 32 and psk1.isalnum(), "generated PSK is long and printable")
    latest = secrets.access_secret_version(secret_id=c1.secret_id, revision="latest")
    check(base64.b64decode(latest.data).decode() == psk1, "secret latest revision")

    expect_error("conn interco overlaps", cc(bgp_config_ipv4=CreateConnectionRequestBgpConfig(
        routing_policy_id=rp4.id, private_ip="169.254.50.1/29", peer_private_ip="169.254.50.2/29")),
        400, "invalid_arguments", "bgp_config_ipv4.private_ip")

    r = api.create_connection(
        name="conn-v4", is_ipv6=False, initiation_policy="vpn_gateway", ikev2_ciphers=IKE, esp_ciphers=ESP,
        enable_route_propagation=False, vpn_gateway_id=gw_dual.id, customer_gateway_id=cg_v4.id,
        bgp_config_ipv4=CreateConnectionRequestBgpConfig(routing_policy_id=rp4b.id))
    c2 = r.connection
    check(c2.tunnel_status_ipv4 is not None and c2.tunnel_status_ipv6 is None, "single v4 tunnel")
    check(c2.bgp_session_ipv6 is None and c2.bgp_status_ipv6 == "disabled", "no v6 session")
    s2 = c2.bgp_session_ipv4
    check(s2.private_ip.startswith("169.254.") and s2.private_ip != c1.bgp_session_ipv4.private_ip,
          f"v4 interco allocated {s2}")
    check(psk_of(secrets, c2) != psk1, "PSKs differ between connections")

    # allowed_connections of VGW-S is 2.
    expect_error("allowed_connections enforced", cc(customer_gateway_id=cg_v6.id, is_ipv6=True,
                                                    bgp_config_ipv4=None,
                                                    bgp_config_ipv6=CreateConnectionRequestBgpConfig(
                                                        routing_policy_id=rp6.id)),
                 403, "quotas_exceeded")

    # --- connections: get, list, filters
    check(api.get_connection(connection_id=c1.id).name == "conn-dual", "get connection")
    expect_error("get unknown connection", lambda: api.get_connection(connection_id="nope"), 404, "not_found")
    lst = api.list_connections()
    check(lst.total_count == 2, "list connections")
    check(api.list_connections(is_ipv6=True).total_count == 1, "filter is_ipv6")
    check(api.list_connections(route_propagation_enabled=True).total_count == 1, "filter propagation")
    check(api.list_connections(routing_policy_ids=[rp4b.id]).connections[0].id == c2.id, "filter policy ids")
    check(api.list_connections(vpn_gateway_ids=[gw_dual.id]).total_count == 2, "filter vgw ids")
    check(api.list_connections(customer_gateway_ids=[cg_v4.id]).total_count == 1, "filter cgw ids")
    check(api.list_connections(statuses=["down"]).total_count == 2, "filter statuses")
    check(api.list_connections(tags=["t1"]).total_count == 1, "filter tags")
    check([c.name for c in api.list_connections(order_by="name_desc").connections] == ["conn-v4", "conn-dual"],
          "connections name_desc")
    check(len(api.list_connections(order_by="status_asc", page_size=1, page=2).connections) == 1, "status order page")
    check(sorted(api.get_vpn_gateway(gateway_id=gw_dual.id).connection_ids) == sorted([c1.id, c2.id]),
          "vpn gateway connection_ids")
    check(api.get_customer_gateway(gateway_id=cg_dual.id).connection_ids == [c1.id], "cgw connection_ids")

    # --- connections: update
    u = api.update_connection(connection_id=c2.id, name="conn-v4-renamed", initiation_policy="customer_gateway",
                              esp_ciphers=[ConnectionCipher(encryption="chacha20poly1305")])
    check(u.name == "conn-v4-renamed" and u.initiation_policy == "customer_gateway"
          and [x.encryption for x in u.esp_ciphers] == ["chacha20poly1305"], "update connection")
    expect_error("update conn bad cipher", lambda: api.update_connection(
        connection_id=c2.id, ikev2_ciphers=[ConnectionCipher(encryption="aes999", dh_group="ecp256")]),
        400, "invalid_arguments", "ikev2_ciphers[0].encryption")
    expect_error("update conn gateway immutable", lambda: api._throw_on_error(api._request(
        "PATCH", f"/s2s-vpn/v1alpha1/regions/fr-par/connections/{c2.id}", body={"vpn_gateway_id": gw_6.id})),
        400, "invalid_arguments", "vpn_gateway_id")

    # --- connection actions
    c = api.disable_route_propagation(connection_id=c1.id)
    check(not c.route_propagation_enabled, "disable route propagation")
    c = api.enable_route_propagation(connection_id=c1.id)
    check(c.route_propagation_enabled, "enable route propagation")
    r = api.renew_connection_psk(connection_id=c1.id, generate_revision=True)
    check(r.connection.secret_revision == 2 and r.connection.secret_id == c1.secret_id, "renew-psk revision 2")
    psk2 = psk_of(secrets, r.connection)
    check(psk2 != psk1, "renewed PSK differs")
    check(base64.b64decode(secrets.access_secret_version(secret_id=c1.secret_id, revision="1").data).decode()
          == psk1, "revision 1 still readable")
    r = api.renew_connection_psk(connection_id=c1.id)
    check(r.connection.secret_revision == 3, "renew-psk without generate_revision on latest makes a new one")
    r = api.change_connection_psk(connection_id=c1.id,
                                  secret=ChangeConnectionPskRequestSecret(id=c1.secret_id, revision=2))
    check(r.connection.secret_revision == 2 and psk_of(secrets, r.connection) == psk2, "change-psk to revision 2")
    expect_error("change-psk unknown secret", lambda: api.change_connection_psk(
        connection_id=c1.id, secret=ChangeConnectionPskRequestSecret(id="nope")), 404, "not_found")
    expect_error("change-psk unknown revision", lambda: api.change_connection_psk(
        connection_id=c1.id, secret=ChangeConnectionPskRequestSecret(id=c1.secret_id, revision=99)),
        400, "invalid_arguments", "secret.revision")
    r = api.renew_connection_psk(connection_id=c1.id)
    check(r.connection.secret_revision == 3, "renew-psk without generate_revision moves to latest existing")
    expect_error("secret unknown revision", lambda: secrets.access_secret_version(
        secret_id=c1.secret_id, revision="42"), 404, "not_found")
    expect_error("secret unknown id", lambda: secrets.access_secret_version(
        secret_id="nope", revision="1"), 404, "not_found")
    expect_error("secret bad token", lambda: SecretV1Beta1API(bad_api.client).access_secret_version(
        secret_id=c1.secret_id, revision="1"), 401, "denied_authentication")

    # A caller's own secret (Secret Manager create + version), then back.
    gen = secrets.get_secret(secret_id=c1.secret_id)
    check(gen.managed and gen.version_count == 3, f"generated secret metadata {gen}")
    own = secrets.create_secret(name="my-psk", tags=["byo"], protected=False)
    check(own.version_count == 0 and own.name == "my-psk", "create secret")
    expect_error("version not base64", lambda: secrets.create_secret_version(secret_id=own.id, data="%%%"),
                 400, "invalid_arguments", "data")
    expect_error("version too short for a PSK", lambda: secrets.create_secret_version(
        secret_id=own.id, data=base64.b64encode(b"short").decode()), 400, "invalid_arguments", "data")
    expect_error("version that would break a device config", lambda: secrets.create_secret_version(
        secret_id=own.id, data=base64.b64encode(b'0123456789abcdef"\n}').decode()), 400,
        "invalid_arguments", "data")
    expect_error("change-psk to a secret without versions", lambda: api.change_connection_psk(
        connection_id=c1.id, secret=ChangeConnectionPskRequestSecret(id=own.id)), 404, "not_found")
    v = secrets.create_secret_version(secret_id=own.id,
                                      data=base64.b64encode(b"operator-chosen-psk-0123456789").decode())
    check(v.revision == 1 and v.secret_id == own.id, "create secret version")
    r = api.change_connection_psk(connection_id=c1.id, secret=ChangeConnectionPskRequestSecret(id=own.id))
    check(r.connection.secret_id == own.id and r.connection.secret_revision == 1
          and psk_of(secrets, r.connection) == "operator-chosen-psk-0123456789", "change-psk to own secret")
    r = api.change_connection_psk(connection_id=c1.id,
                                  secret=ChangeConnectionPskRequestSecret(id=c1.secret_id, revision=3))
    check(r.connection.secret_id == c1.secret_id and r.connection.secret_revision == 3, "change-psk back")
    expect_error("version of unknown secret", lambda: secrets.create_secret_version(
        secret_id="nope", data=base64.b64encode(b"x" * 20).decode()), 404, "not_found")
    state["own_secret"] = own.id

    c = api.set_routing_policy(connection_id=c2.id, routing_policy_v4=rp4.id)
    check(c.bgp_session_ipv4.routing_policy_id == rp4.id and c.bgp_session_ipv4.private_ip == s2.private_ip,
          "set-routing-policy v4 overrides, keeps interco")
    c = api.set_routing_policy(connection_id=c2.id, routing_policy_v6=rp6.id)
    check(c.bgp_session_ipv6 is not None and c.bgp_session_ipv6.routing_policy_id == rp6.id
          and c.bgp_status_ipv6 == "down", "set-routing-policy v6 adds a session")
    expect_error("set-routing-policy wrong family", lambda: api.set_routing_policy(
        connection_id=c2.id, routing_policy_v4=rp6.id), 400, "invalid_arguments", "routing_policy_v4")
    expect_error("set-routing-policy none", lambda: api.set_routing_policy(connection_id=c2.id), 400,
                 "invalid_arguments", "routing_policy_v4")
    c = api.detach_routing_policy(connection_id=c2.id, routing_policy_v6=rp6.id)
    check(c.bgp_session_ipv6 is None and c.bgp_status_ipv6 == "disabled", "detach v6 policy")
    expect_error("detach last policy", lambda: api.detach_routing_policy(
        connection_id=c2.id, routing_policy_v4=rp4.id), 412, "precondition_failed")
    expect_error("detach not attached", lambda: api.detach_routing_policy(
        connection_id=c2.id, routing_policy_v4=rp4b.id), 400, "invalid_arguments", "routing_policy_v4")

    # --- in-use refusals
    expect_error("delete vgw in use", lambda: api.delete_vpn_gateway(gateway_id=gw_dual.id), 412,
                 "precondition_failed")
    expect_error("delete cgw in use", lambda: api.delete_customer_gateway(gateway_id=cg_dual.id), 412,
                 "precondition_failed")
    expect_error("delete rp in use", lambda: api.delete_routing_policy(routing_policy_id=rp4.id), 412,
                 "precondition_failed")
    expect_error("cgw drop the primary family", lambda: api.update_customer_gateway(
        gateway_id=cg_dual.id, ipv6_public=""), 400, "invalid_arguments", "ipv6_public")

    # --- deletes
    api.delete_routing_policy(routing_policy_id=rp4b.id)
    expect_error("rp gone", lambda: api.get_routing_policy(routing_policy_id=rp4b.id), 404, "not_found")
    api.delete_connection(connection_id=c2.id)
    expect_error("connection gone", lambda: api.get_connection(connection_id=c2.id), 404, "not_found")
    expect_error("its secret is gone", lambda: secrets.access_secret_version(
        secret_id=c2.secret_id, revision="1"), 404, "not_found")
    api.delete_customer_gateway(gateway_id=cg_v4.id)
    expect_error("cgw gone", lambda: api.get_customer_gateway(gateway_id=cg_v4.id), 404, "not_found")
    d = api.delete_vpn_gateway(gateway_id=gw_v4.id)
    check(d.status == "deprovisioning", "delete vgw -> deprovisioning")
    gone = False
    for _ in range(100):
        try:
            api.get_vpn_gateway(gateway_id=gw_v4.id)
            time.sleep(0.05)
        except ScalewayException as e:
            gone = e.status_code == 404
            break
    check(gone, "deprovisioned gateway removed by the agent")

    # Last: an acknowledged write, then the harness kills -9 the server.
    last = api.update_connection(connection_id=c1.id, name="conn-dual-final", tags=["t1", "final"])
    check(last.name == "conn-dual-final", "final write acknowledged")
    state.update(state | {
        "gw_dual": gw_dual.id, "gw_6": gw_6.id, "gw_v4": gw_v4.id, "cg_dual": cg_dual.id,
        "cg_v6": cg_v6.id, "rp4": rp4.id, "rp6": rp6.id, "c1": c1.id, "secret_id": c1.secret_id,
        "psk1": psk1, "psk2": psk2, "c1_v4_ip": c1.bgp_session_ipv4.private_ip,
        "c1_v6_ip": c1.bgp_session_ipv6.private_ip,
    })


def phase2(api, secrets, bad_api, state):
    check(api.list_vpn_gateways().total_count == 2, "vpn gateways survived")
    check(api.get_vpn_gateway(gateway_id=state["gw_6"]).name == "gw-v6-renamed", "updated name survived")
    expect_error("deleted gateway stays deleted", lambda: api.get_vpn_gateway(gateway_id=state["gw_v4"]),
                 404, "not_found")
    check(api.list_customer_gateways().total_count == 2, "customer gateways survived")
    check(api.list_routing_policies().total_count == 2, "routing policies survived")
    c1 = api.get_connection(connection_id=state["c1"])
    check(c1.name == "conn-dual-final" and c1.tags == ["t1", "final"], "last acknowledged write survived kill -9")
    check(c1.secret_revision == 3 and c1.bgp_session_ipv4.private_ip == state["c1_v4_ip"]
          and c1.bgp_session_ipv6.private_ip == state["c1_v6_ip"], "connection state survived")
    for rev, key in (("1", "psk1"), ("2", "psk2")):
        r = secrets.access_secret_version(secret_id=state["secret_id"], revision=rev)
        check(base64.b64decode(r.data).decode() == state[key], f"PSK revision {rev} survived restart")
    r = secrets.access_secret_version(secret_id=state["own_secret"], revision="latest")
    check(base64.b64decode(r.data) == b"operator-chosen-psk-0123456789", "caller's secret survived restart")
    expect_error("bad token after restart", lambda: bad_api.list_connections(), 401, "denied_authentication")
    # Writes still work after the restart.
    r = api.renew_connection_psk(connection_id=state["c1"], generate_revision=True)
    check(r.connection.secret_revision == 4, "renew after restart")


def tenants(url, operator_api):
    """Two tenants through the SDK, each with its key and default project."""
    apis, secret_apis, made = {}, {}, {}
    for t, (key, project, org) in TENANTS.items():
        c = Client(api_url=url, access_key=ACCESS_KEY, secret_key=key, default_region="fr-par",
                   default_project_id=project, default_organization_id=org)
        apis[t], secret_apis[t] = S2SVpnV1Alpha1API(c), SecretV1Beta1API(c)
    for t, ip, peer in (("a", IP4_D, "203.0.113.40"), ("b", IP4_E, "203.0.113.50")):
        api = apis[t]
        gw = api.create_vpn_gateway(name=f"gw-{t}", gateway_type="VGW-S", private_network_id=PN_V4,
                                    public_config=CreateVpnGatewayRequestPublicConfig(ipam_ipv4_id=ip))
        cg = api.create_customer_gateway(name=f"cg-{t}", asn=65100, ipv4_public=peer)
        rp = api.create_routing_policy(name=f"rp-{t}", is_ipv6=False, prefix_filter_in=["10.50.0.0/16"])
        conn = api.create_connection(
            name=f"conn-{t}", is_ipv6=False, initiation_policy="customer_gateway", ikev2_ciphers=IKE,
            esp_ciphers=ESP, enable_route_propagation=True, vpn_gateway_id=gw.id, customer_gateway_id=cg.id,
            bgp_config_ipv4=CreateConnectionRequestBgpConfig(routing_policy_id=rp.id)).connection
        made[t] = dict(gw=gw, cg=cg, rp=rp, conn=conn)
        _, project, org = TENANTS[t]
        check(all(x.project_id == project and x.organization_id == org for x in (gw, cg, rp, conn)),
              f"tenant {t}: created in its project and organization")
    a, b = made["a"], made["b"]
    api_a, api_b = apis["a"], apis["b"]
    # Lists: each its own; the operator sees both (and its own).
    check([g.id for g in api_a.list_vpn_gateways().gateways] == [a["gw"].id], "A lists its gateway only")
    check([c.id for c in api_b.list_connections().connections] == [b["conn"].id], "B lists its connection only")
    check([p.id for p in api_b.list_routing_policies().routing_policies] == [b["rp"].id], "B lists its policy only")
    check(api_a.list_customer_gateways().total_count == 1, "A's customer gateway count")
    check(api_a.list_connections(project_id=TENANTS["b"][1]).total_count == 0, "A filtering on B's project")
    everything = {g.id for g in operator_api.list_vpn_gateways(page_size=100).gateways}
    check({a["gw"].id, b["gw"].id} <= everything, "the operator's key lists both tenants")
    # B on A's resources: not found, every call.
    conn_a = a["conn"].id
    for what, call in (
        ("get gateway", lambda: api_b.get_vpn_gateway(gateway_id=a["gw"].id)),
        ("update gateway", lambda: api_b.update_vpn_gateway(gateway_id=a["gw"].id, name="x")),
        ("delete gateway", lambda: api_b.delete_vpn_gateway(gateway_id=a["gw"].id)),
        ("get customer gateway", lambda: api_b.get_customer_gateway(gateway_id=a["cg"].id)),
        ("delete customer gateway", lambda: api_b.delete_customer_gateway(gateway_id=a["cg"].id)),
        ("get policy", lambda: api_b.get_routing_policy(routing_policy_id=a["rp"].id)),
        ("update policy", lambda: api_b.update_routing_policy(routing_policy_id=a["rp"].id, name="x")),
        ("get connection", lambda: api_b.get_connection(connection_id=conn_a)),
        ("update connection", lambda: api_b.update_connection(connection_id=conn_a, name="x")),
        ("delete connection", lambda: api_b.delete_connection(connection_id=conn_a)),
        ("renew psk", lambda: api_b.renew_connection_psk(connection_id=conn_a)),
        ("disable propagation", lambda: api_b.disable_route_propagation(connection_id=conn_a)),
        ("detach policy", lambda: api_b.detach_routing_policy(connection_id=conn_a,
                                                              routing_policy_v4=a["rp"].id)),
        ("access secret", lambda: secret_apis["b"].access_secret_version(
            secret_id=a["conn"].secret_id, revision="latest")),
        ("get secret", lambda: secret_apis["b"].get_secret(secret_id=a["conn"].secret_id)),
    ):
        expect_error(f"B: {what} of A's", call, 404, "not_found")
    check(api_a.get_connection(connection_id=conn_a).route_propagation_enabled, "A's connection untouched")
    # B creating in A's project: permission denied.
    expect_error("B creates in A's project", lambda: api_b.create_customer_gateway(
        name="x", asn=65101, ipv4_public="203.0.113.60", project_id=TENANTS["a"][1]), 403, "permissions_denied")
    # A connection of B's that names A's gateway: refused.
    expect_error("B's connection on A's gateway", lambda: api_b.create_connection(
        name="x", is_ipv6=False, initiation_policy="vpn_gateway", ikev2_ciphers=IKE, esp_ciphers=ESP,
        enable_route_propagation=False, vpn_gateway_id=a["gw"].id, customer_gateway_id=b["cg"].id,
        bgp_config_ipv4=CreateConnectionRequestBgpConfig(routing_policy_id=b["rp"].id)),
        400, "invalid_arguments", "vpn_gateway_id")
    # Each tenant's own calls work; clean up through them.
    r = secret_apis["a"].access_secret_version(secret_id=a["conn"].secret_id, revision="latest")
    check(len(base64.b64decode(r.data)) >= 32, "A reads its own PSK")
    for t in ("a", "b"):
        api, m = apis[t], made[t]
        api.delete_connection(connection_id=m["conn"].id)
        api.delete_customer_gateway(gateway_id=m["cg"].id)
        api.delete_routing_policy(routing_policy_id=m["rp"].id)
        api.delete_vpn_gateway(gateway_id=m["gw"].id)
    check(api_a.list_connections().total_count == 0, "A's connection deleted by A")


def main():
    phase, url, token, state_file = sys.argv[1:5]
    client = Client(api_url=url, access_key=ACCESS_KEY, secret_key=token, default_region="fr-par")
    bad = Client(api_url=url, access_key=ACCESS_KEY, secret_key="22222222-2222-2222-2222-222222222222",
                 default_region="fr-par")
    api = S2SVpnV1Alpha1API(client)
    secrets = SecretV1Beta1API(client)
    bad_api = S2SVpnV1Alpha1API(bad)
    state = {}
    try:
        if phase == "phase1":
            phase1(api, secrets, bad_api, state)
            with open(state_file, "w") as f:
                json.dump(state, f)
        elif phase == "tenants":
            tenants(url, api)
        else:
            with open(state_file) as f:
                state = json.load(f)
            phase2(api, secrets, bad_api, state)
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        failures.append(f"unexpected exception: {e!r}")
    print(f"SUMMARY {phase}: {passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
