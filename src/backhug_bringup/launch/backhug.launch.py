"""Bring up the BackHug system on a ROS 2 distro.

    ros2 launch backhug_bringup backhug.launch.py hardware:=sim|real|gazebo|mock rviz:=true
        serial_port:=/dev/ttyACM0 program:=full_back intensity:=0.6

The node list, their parameter files and what differs per hardware come from config/system.yaml
through backhug_bringup.system.load_system() -- the same source `backhug run` reads -- so this file
only turns that description into launch actions:

- every node of system.yaml with its parameter file and the per-hardware overrides; a node marked
  `required` shuts the whole launch down when it exits (a dead safety monitor or hardware node
  must not leave the rest running); the lifecycle node (hw_interface) is configured, then
  activated when it reaches `inactive`;
- the hardware's `infrastructure`: robot_state_publisher (URDF from backhug_description's
  load_description, the one validated path), Gazebo Harmonic with worlds/backhug.sdf + the robot
  spawned from /robot_description + the /clock bridge, ros2_control_node for mock_components, and
  the controller spawners (joint_state_broadcaster, finger_position_controller, each with
  config/gazebo_controllers.yaml as `--param-file`, which Jazzy needs);
- RViz with rviz/backhug.rviz when rviz:=true, and force_markers (this package) feeding its
  /finger_forces/markers display;
- `program:=<id>` runs that program once the sequencer is up, through this package's small
  action client `run_program` (backhug_bringup/program_client.py); its exit does not stop the
  system.

Needs a ROS 2 distro (launch, launch_ros and the packages above); on the PyPI route use
`backhug run`, which starts the same nodes from the same system.yaml.
"""

from backhug_bringup.system import HARDWARE_CHOICES, load_system
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    IncludeLaunchDescription,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    Shutdown,
)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from backhug_description import load_description, share_directory

LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'fatal']
CONTROLLERS = ['joint_state_broadcaster', 'finger_position_controller']


def _system_nodes(context, system, log_level: str) -> list:
    """The nodes of config/system.yaml as launch actions (lifecycle transitions included)."""
    actions = []
    use_sim_time = LaunchConfiguration('use_sim_time').perform(context)
    for spec in system.nodes:
        parameters = [str(path) for path in spec.parameter_files]
        overrides = dict(spec.parameters)
        # An explicit use_sim_time:= applies to the nodes that follow the system's clock, never
        # to the clock's owner (hw_interface with hardware:=sim publishes /clock itself).
        if use_sim_time != 'auto' and overrides['use_sim_time'] == system.use_sim_time:
            overrides['use_sim_time'] = use_sim_time == 'true'
        if spec.name == 'hw_interface' and system.hardware == 'real':
            # The serial port only means something to the real board (system.yaml: serial).
            overrides['serial_port'] = LaunchConfiguration('serial_port').perform(context)
        common = {
            'package': spec.package,
            'executable': spec.executable,
            'name': spec.name,
            'output': 'screen',
            'parameters': [*parameters, overrides],
            'ros_arguments': ['--log-level', log_level],
        }
        if spec.required:
            common['on_exit'] = Shutdown(reason=f'{spec.name} exited (a required node)')
        if spec.lifecycle:
            node = LifecycleNode(namespace='', **common)
            configure = EmitEvent(
                event=ChangeState(
                    lifecycle_node_matcher=matches_action(node),
                    transition_id=Transition.TRANSITION_CONFIGURE,
                )
            )
            activate_when_inactive = RegisterEventHandler(
                OnStateTransition(
                    target_lifecycle_node=node,
                    goal_state='inactive',
                    entities=[
                        LogInfo(msg=f'{spec.name} configured; activating'),
                        EmitEvent(
                            event=ChangeState(
                                lifecycle_node_matcher=matches_action(node),
                                transition_id=Transition.TRANSITION_ACTIVATE,
                            )
                        ),
                    ],
                )
            )
            actions += [activate_when_inactive, node, configure]
        else:
            actions.append(Node(**common))
    return actions


def _infrastructure(system, urdf: str, use_sim_time: bool, gazebo_gui: bool) -> list:
    """What only a distro provides around our nodes, as system.yaml lists it for the hardware."""
    actions = []
    wanted = set(system.infrastructure)
    controllers_file = str(share_directory() / 'config' / 'gazebo_controllers.yaml')
    if 'robot_state_publisher' in wanted:
        actions.append(
            Node(
                package='robot_state_publisher',
                executable='robot_state_publisher',
                output='screen',
                parameters=[
                    {
                        'robot_description': ParameterValue(urdf, value_type=str),
                        'use_sim_time': use_sim_time,
                    }
                ],
            )
        )
    if 'gz_sim' in wanted:
        world = str(share_directory() / 'worlds' / 'backhug.sdf')
        actions += [
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(
                    PathJoinSubstitution(
                        [FindPackageShare('ros_gz_sim'), 'launch', 'gz_sim.launch.py']
                    )
                ),
                # -r: run at once; -s: server only (no GUI window) unless gui:=true.
                launch_arguments={
                    'gz_args': f'-r -v 3 {world}' + ('' if gazebo_gui else ' -s'),
                    'on_exit_shutdown': 'true',
                }.items(),
            ),
            Node(
                package='ros_gz_sim',
                executable='create',
                output='screen',
                arguments=['-topic', '/robot_description', '-name', 'backhug'],
            ),
        ]
    if 'clock_bridge' in wanted:
        actions.append(
            Node(
                package='ros_gz_bridge',
                executable='parameter_bridge',
                name='clock_bridge',
                output='screen',
                arguments=['/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock'],
            )
        )
    if 'controller_manager' in wanted:
        # mock_components: a controller manager of our own (gz_ros2_control brings one in Gazebo).
        # It takes the URDF from /robot_description (Jazzy), the controllers from the file.
        actions.append(
            Node(
                package='controller_manager',
                executable='ros2_control_node',
                output='screen',
                parameters=[controllers_file, {'use_sim_time': use_sim_time}],
            )
        )
    if 'controller_spawners' in wanted:
        for controller in CONTROLLERS:
            actions.append(
                Node(
                    package='controller_manager',
                    executable='spawner',
                    name=f'spawner_{controller}',
                    output='screen',
                    arguments=[
                        controller,
                        '--param-file',
                        controllers_file,
                        '--controller-manager',
                        '/controller_manager',
                        # Gazebo's controller manager exists only once the robot is spawned.
                        '--controller-manager-timeout',
                        '120',
                    ],
                )
            )
    return actions


def _launch_setup(context, *args, **kwargs) -> list:
    """Resolve the hardware choice, read system.yaml for it, return the actions."""
    hardware = LaunchConfiguration('hardware').perform(context)
    log_level = LaunchConfiguration('log_level').perform(context)
    system = load_system(hardware)
    use_sim_time = LaunchConfiguration('use_sim_time').perform(context)
    sim_time = system.use_sim_time if use_sim_time == 'auto' else use_sim_time == 'true'
    urdf = load_description(hardware).urdf
    actions = [
        LogInfo(
            msg=f'BackHug: hardware {hardware}, use_sim_time {sim_time}, nodes '
            f'{", ".join(system.node_names)}, infrastructure {", ".join(system.infrastructure)}'
        ),
        *_infrastructure(
            system, urdf, sim_time, LaunchConfiguration('gui').perform(context) == 'true'
        ),
        *_system_nodes(context, system, log_level),
    ]
    actions.append(
        Node(
            package='rviz2',
            executable='rviz2',
            name='rviz2',
            output='log',
            arguments=['-d', str(share_directory() / 'rviz' / 'backhug.rviz')],
            parameters=[{'use_sim_time': sim_time}],
            condition=IfCondition(LaunchConfiguration('rviz')),
        )
    )
    # RViz's MarkerArray display (rviz/backhug.rviz) shows the finger loads from this node.
    actions.append(
        Node(
            package='backhug_bringup',
            executable='force_markers',
            name='force_markers',
            output='screen',
            parameters=[{'use_sim_time': sim_time, 'hardware': hardware}],
            condition=IfCondition(LaunchConfiguration('rviz')),
        )
    )
    program = LaunchConfiguration('program').perform(context)
    if program:
        actions.append(
            Node(
                package='backhug_bringup',
                executable='run_program',
                name='run_program',
                output='screen',
                arguments=[
                    program,
                    '--intensity',
                    LaunchConfiguration('intensity').perform(context),
                ],
                parameters=[{'use_sim_time': sim_time}],
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    """Arguments, then everything else once the arguments are known (OpaqueFunction)."""
    arguments = [
        DeclareLaunchArgument(
            'hardware',
            default_value='sim',
            choices=list(HARDWARE_CHOICES),
            description='The device: sim (MuJoCo device with a simulated user), real (the motor '
            'board over serial), gazebo (Gazebo Harmonic through gz_ros2_control) or mock '
            "(ros2_control's mock_components).",
        ),
        DeclareLaunchArgument(
            'serial_port',
            default_value='/dev/ttyACM0',
            description="The motor board's serial port (only effective if hardware is real).",
        ),
        DeclareLaunchArgument(
            'rviz',
            default_value='false',
            choices=['true', 'false'],
            description='Start RViz 2 with the robot model and the finger-force markers.',
        ),
        DeclareLaunchArgument(
            'gui',
            default_value='false',
            choices=['true', 'false'],
            description="Start Gazebo's GUI (only effective if hardware is gazebo).",
        ),
        DeclareLaunchArgument(
            'program',
            default_value='',
            description='Run this library program (e.g. full_back) once the system is up; '
            'empty: none.',
        ),
        DeclareLaunchArgument(
            'intensity',
            default_value='0.5',
            description='Intensity 0..1 for program (only effective if program is set).',
        ),
        DeclareLaunchArgument(
            'use_sim_time',
            default_value='auto',
            choices=['auto', 'true', 'false'],
            description='Follow /clock; auto: as config/system.yaml says for the hardware '
            '(true for sim and gazebo).',
        ),
        DeclareLaunchArgument(
            'log_level',
            default_value='info',
            choices=LOG_LEVELS,
            description='Log level of every BackHug node.',
        ),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_launch_setup)])
