# vagrant_stub.rb -- just enough of Vagrant's configuration API to evaluate the Vagrantfile
# without Vagrant (which Debian does not ship) and print what it defines, one line per VM:
#   <name> hostname=<h> ips=<ip,...> primary=<bool> provision=<inline command>
# Usage: ruby vagrant_stub.rb VAGRANTFILE. An unknown method fails loudly (NoMethodError), so a
# Vagrantfile that calls something this stub does not know is reported, not ignored.
class Recorder
  attr_reader :settings, :children
  def initialize
    @settings = Hash.new { |h, k| h[k] = [] }
    @children = {}
  end
  def vm
    self
  end
  %w[box hostname].each do |a|
    define_method("#{a}=") { |v| @settings[a] = v }
  end
  def synced_folder(*args) = @settings["synced_folder"] << args
  def network(kind, **opts) = @settings["network"] << [kind, opts]
  def provision(kind, **opts) = @settings["provision"] << [kind, opts]
  def provider(_name)
    yield Struct.new(:cpus, :memory).new
  end
  def define(name, **opts)
    child = Recorder.new
    child.settings["primary"] = opts[:primary] ? true : false
    yield child
    @children[name] = child
  end
end

module Vagrant
  @root = Recorder.new
  def self.configure(_version)
    yield @root
  end
  def self.root = @root
end

load ARGV.fetch(0)
Vagrant.root.children.each do |name, vm|
  ips = vm.settings["network"].map { |_, o| o[:ip] }.compact.join(",")
  prov = vm.settings["provision"].map { |_, o| o[:inline] }.join(" ; ")
  puts "#{name} hostname=#{vm.settings['hostname']} ips=#{ips} primary=#{vm.settings['primary']} provision=#{prov}"
end
